// Package crn parses, formats and matches IBM Cloud resource names:
// crn:version:cname:ctype:service-name:location:scope:service-instance:resource-type:resource
package crn

import (
	"strings"

	"github.com/keyline/keyline/internal/errs"
)

// CRN is a parsed cloud resource name. Scope keeps its prefix ("a/<account>").
type CRN struct {
	CName           string // "bluemix"
	CType           string // "public", "dedicated", "local"
	ServiceName     string // "kms", "messagehub", "is"
	Location        string // "us-south"
	Scope           string // "a/<account>"
	ServiceInstance string
	ResourceType    string // "key", "backup", "task"
	Resource        string
}

const maxLen = 512

// Parse reads a CRN and says precisely what is wrong with a bad one.
func Parse(s string) (CRN, error) {
	const op = "crn.Parse"
	if len(s) > maxLen {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN is longer than 512 characters")
	}
	if !strings.HasPrefix(s, "crn:") {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "a CRN starts with \"crn:v1:\"")
	}
	// Cut into an array rather than strings.Split's slice: every audit
	// event parses its target's CRN.
	if n := strings.Count(s, ":") + 1; n != 10 {
		return CRN{}, errs.Ef(op, errs.Invalid, "INVALID_CRN", "a CRN has 10 segments separated by ':' (crn:v1:cname:ctype:service:location:scope:instance:resource-type:resource); this one has %d", n)
	}
	var parts [10]string
	rest := s
	for i := range len(parts) - 1 {
		parts[i], rest, _ = strings.Cut(rest, ":")
	}
	parts[len(parts)-1] = rest
	if parts[1] != "v1" {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "only CRN version v1 is supported")
	}
	c := CRN{CName: parts[2], CType: parts[3], ServiceName: parts[4], Location: parts[5], Scope: parts[6],
		ServiceInstance: parts[7], ResourceType: parts[8], Resource: parts[9]}
	if c.CName == "" || !isToken(c.CName) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's cname segment must be lowercase letters, digits or '-'")
	}
	switch c.CType {
	case "public", "dedicated", "local":
	default:
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's ctype segment must be public, dedicated or local")
	}
	if c.ServiceName != "" && !isServiceName(c.ServiceName) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's service-name segment must be lowercase letters, digits, '-' or '.'")
	}
	if c.Location != "" && !isToken(c.Location) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's location segment must be lowercase letters, digits or '-'")
	}
	if c.Scope != "" {
		kind, id, ok := strings.Cut(c.Scope, "/")
		if !ok || (kind != "a" && kind != "o" && kind != "s") || id == "" || !isID(id) {
			return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's scope segment must be a/<account-id>")
		}
	}
	if c.ServiceInstance != "" && !isInstance(c.ServiceInstance) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's service-instance segment must be lowercase letters, digits, '-' or '/'")
	}
	if (c.ResourceType == "") != (c.Resource == "") {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's resource-type and resource segments must both be set or both be empty")
	}
	if c.ResourceType != "" && !isID(c.ResourceType) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's resource-type segment must be letters, digits, '-' or '_'")
	}
	if c.Resource != "" && !isResource(c.Resource) {
		return CRN{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN's resource segment has characters that are not allowed")
	}
	return c, nil
}

// String formats the CRN.
func (c CRN) String() string {
	return strings.Join([]string{"crn", "v1", c.CName, c.CType, c.ServiceName, c.Location, c.Scope,
		c.ServiceInstance, c.ResourceType, c.Resource}, ":")
}

// Account is the account ID of an "a/" scope, or "".
func (c CRN) Account() string {
	if id, ok := strings.CutPrefix(c.Scope, "a/"); ok {
		return id
	}
	return ""
}

// Instance is the CRN of the service instance this CRN belongs to.
func (c CRN) Instance() CRN {
	c.ResourceType, c.Resource = "", ""
	return c
}

// New builds an instance CRN in the public cloud.
func New(service, location, account, instance string) CRN {
	return CRN{CName: "bluemix", CType: "public", ServiceName: service, Location: location, Scope: "a/" + account, ServiceInstance: instance}
}

// Child is c with a resource type and resource.
func (c CRN) Child(resourceType, resource string) CRN {
	c.ResourceType, c.Resource = resourceType, resource
	return c
}

// KeyRef is a Key Protect key named by its CRN, parsed once where the CRN
// enters (a deployment's parameters, a stored record) and carried as is
// across the seams between services, so that no side parses it again.
type KeyRef struct {
	CRN      string // the CRN as given, which is how every message names the key
	Account  string // the account of its a/ scope ("" when the scope is not one)
	Region   string
	Instance string // the GUID of the Key Protect instance holding the key
	ID       string // the key's id
}

// NotKeyCode is the error code of ParseKey for a well-formed CRN that does
// not name a Key Protect key; a malformed one gets Parse's INVALID_CRN.
const NotKeyCode = "NOT_A_KEY_CRN"

// ParseKey reads the CRN of a Key Protect key: Parse's precise errors for
// a malformed CRN, NotKeyCode for the CRN of anything else.
func ParseKey(s string) (KeyRef, error) {
	c, err := Parse(s)
	if err != nil {
		return KeyRef{}, err
	}
	if c.ServiceName != "kms" || c.ResourceType != "key" || c.Resource == "" || c.ServiceInstance == "" {
		return KeyRef{}, errs.E("crn.ParseKey", errs.Invalid, NotKeyCode,
			"the CRN does not name a Key Protect key (crn:v1:<cname>:<ctype>:kms:<region>:a/<account>:<instance>:key:<id>)")
	}
	return KeyRef{CRN: s, Account: c.Account(), Region: c.Location, Instance: c.ServiceInstance, ID: c.Resource}, nil
}

// String is the key's CRN.
func (k KeyRef) String() string { return k.CRN }

// IsZero says no key is named (a deployment without a disk or backup key).
func (k KeyRef) IsZero() bool { return k.CRN == "" }

// Pattern is a CRN in which a segment may be "*" (any value) and the last
// segment may end in "*" (prefix), as Key Protect's registration queries allow.
type Pattern struct{ segs []string }

// ParsePattern reads a CRN pattern of 10 segments.
func ParsePattern(s string) (Pattern, error) {
	const op = "crn.ParsePattern"
	if len(s) > maxLen {
		return Pattern{}, errs.E(op, errs.Invalid, "INVALID_CRN", "the CRN pattern is longer than 512 characters")
	}
	segs := strings.Split(s, ":")
	if len(segs) != 10 || segs[0] != "crn" {
		return Pattern{}, errs.E(op, errs.Invalid, "INVALID_CRN", "a CRN pattern has the 10 segments of a CRN, each a value or '*'")
	}
	for i, seg := range segs {
		if strings.Contains(strings.TrimSuffix(seg, "*"), "*") || (i < 9 && strings.HasSuffix(seg, "*") && seg != "*") {
			return Pattern{}, errs.E(op, errs.Invalid, "INVALID_CRN", "'*' may stand for a whole segment, or end the last segment")
		}
	}
	return Pattern{segs: segs}, nil
}

// WildcardBefore reports whether any of the first n segments is a wildcard.
func (p Pattern) WildcardBefore(n int) bool {
	for i := 0; i < n && i < len(p.segs); i++ {
		if strings.Contains(p.segs[i], "*") {
			return true
		}
	}
	return false
}

// Match reports whether the CRN string s matches the pattern.
func (p Pattern) Match(s string) bool {
	segs := strings.Split(s, ":")
	if len(segs) != len(p.segs) {
		return false
	}
	for i, want := range p.segs {
		switch {
		case want == "*":
		case strings.HasSuffix(want, "*"):
			if !strings.HasPrefix(segs[i], strings.TrimSuffix(want, "*")) {
				return false
			}
		case want != segs[i]:
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func isServiceName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

func isID(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func isInstance(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '/' || r == '_') {
			return false
		}
	}
	return true
}

// isResource allows the unreserved and sub-delim characters of RFC 3986 and '/'.
func isResource(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-._~!$&'()*+,;=@/%", r):
		default:
			return false
		}
	}
	return true
}
