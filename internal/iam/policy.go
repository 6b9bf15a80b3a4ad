package iam

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Policy types and states.
const (
	TypeAccess        = "access"
	TypeAuthorization = "authorization"
	StateActive       = "active"
	StateDeleted      = "deleted"
)

// Policy is an IAM policy in the v1 policy management API's shape: an access
// policy grants roles to an identity (subject iam_id); an authorization grants
// roles to a source service on a target service.
type Policy struct {
	ID               string           `json:"id"`
	Type             string           `json:"type"`
	Description      string           `json:"description,omitempty"`
	Subjects         []PolicySubject  `json:"subjects"`
	Roles            []PolicyRole     `json:"roles"`
	Resources        []PolicyResource `json:"resources"`
	Href             string           `json:"href,omitempty"`
	CreatedAt        time.Time        `json:"created_at"`
	CreatedByID      string           `json:"created_by_id"`
	LastModifiedAt   time.Time        `json:"last_modified_at"`
	LastModifiedByID string           `json:"last_modified_by_id"`
	State            string           `json:"state"`
	// Version counts the policy's changes; it is its entity tag.
	Version int `json:"-"`
}

// PolicySubject is who a policy grants to; v1 subject attributes have no operator.
type PolicySubject struct {
	Attributes []SubjectAttribute `json:"attributes"`
}

// SubjectAttribute is one name/value of a subject.
type SubjectAttribute struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// PolicyRole is a granted role, named by its CRN.
type PolicyRole struct {
	RoleID      string `json:"role_id"`
	DisplayName string `json:"display_name,omitempty"`
	Description string `json:"description,omitempty"`
}

// PolicyResource is what a policy grants on.
type PolicyResource struct {
	Attributes []ResourceAttribute `json:"attributes"`
	Tags       []ResourceAttribute `json:"tags,omitempty"`
}

// ResourceAttribute is one name/value of a resource; Operator is stringEquals.
type ResourceAttribute struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Operator string `json:"operator,omitempty"`
}

// PolicyRequest is the body of a create or replace.
type PolicyRequest struct {
	Type        string           `json:"type"`
	Description string           `json:"description,omitempty"`
	Subjects    []PolicySubject  `json:"subjects"`
	Roles       []PolicyRole     `json:"roles"`
	Resources   []PolicyResource `json:"resources"`
}

// ETag is the policy's entity tag for If-Match.
func (p Policy) ETag() string { return strconv.Itoa(p.Version) }

// AccountID is the account the policy belongs to: its resource's account.
func (p Policy) AccountID() string { return p.ResourceAttr("accountId") }

// SubjectAttr is the value of a subject attribute, or "".
func (p Policy) SubjectAttr(name string) string {
	for _, s := range p.Subjects {
		for _, a := range s.Attributes {
			if a.Name == name {
				return a.Value
			}
		}
	}
	return ""
}

// ResourceAttr is the value of a resource attribute, or "".
func (p Policy) ResourceAttr(name string) string {
	for _, r := range p.Resources {
		for _, a := range r.Attributes {
			if a.Name == name {
				return a.Value
			}
		}
	}
	return ""
}

// HasRole reports whether the policy grants the role CRN.
func (p Policy) HasRole(role string) bool {
	return slices.ContainsFunc(p.Roles, func(r PolicyRole) bool { return r.RoleID == role })
}

// Origin is how the console shows who made an authorization: "User defined",
// or "Created by <CRN>" for one a source service created for a dependent service.
func (p Policy) Origin() string {
	if src, ok := strings.CutPrefix(p.CreatedByID, "crn-"); ok {
		return "Created by " + src
	}
	return "User defined"
}

// target is the resource a policy is about, for checking the caller may administer it.
func (p Policy) target() auth.Resource {
	return auth.Resource{AccountID: p.ResourceAttr("accountId"), ServiceName: p.ResourceAttr("serviceName"),
		ServiceInstance: p.ResourceAttr("serviceInstance"), ResourceType: p.ResourceAttr("resourceType"),
		ResourceID: p.ResourceAttr("resource")}
}

func (p Policy) crn() string {
	return iamCRN(ServicePolicies, p.AccountID(), "policy", p.ID)
}

// subjectKey is the index key under which Authorize finds the policy.
func (p Policy) subjectKey() string {
	if p.Type == TypeAccess {
		return "iam:" + p.SubjectAttr("iam_id")
	}
	return "svc:" + p.SubjectAttr("serviceName")
}

// resourceCovers reports whether the policy's resource includes r: every
// attribute the policy names must equal r's; an attribute it leaves out
// matches anything. It runs on every call, so it allocates nothing.
func (p Policy) resourceCovers(r auth.Resource) bool {
	value := func(name string) (string, bool) {
		switch name {
		case "accountId":
			return r.AccountID, true
		case "serviceName":
			return r.ServiceName, true
		case "serviceInstance":
			return r.ServiceInstance, true
		case "resourceType":
			return r.ResourceType, true
		case "resource":
			return r.ResourceID, true
		}
		return "", false
	}
	return p.ResourceAttr("accountId") != "" && len(p.Resources) == 1 && allEqual(p.Resources[0].Attributes, value)
}

// subjectCovers reports whether an authorization's subject includes the
// service principal sp.
func (p Policy) subjectCovers(sp *auth.Principal) bool {
	value := func(name string) (string, bool) {
		switch name {
		case "accountId":
			return sp.AccountID, true
		case "serviceName":
			return sp.ServiceName, true
		case "serviceInstance":
			return sp.SourceInstance, true
		}
		return "", false
	}
	return len(p.Subjects) == 1 && allEqual(p.Subjects[0].Attributes, value)
}

// attribute is a policy attribute of either side.
type attribute interface {
	SubjectAttribute | ResourceAttribute
	nameValue() (string, string)
	matches(got string) bool
}

func (a SubjectAttribute) nameValue() (string, string)  { return a.Name, a.Value }
func (a ResourceAttribute) nameValue() (string, string) { return a.Name, a.Value }
func (a SubjectAttribute) matches(got string) bool      { return got == a.Value }
func (a ResourceAttribute) matches(got string) bool     { return attributeMatches(a, got) }

// allEqual reports whether every attribute matches what value says of its
// name: equals it, or for a stringMatch resource name, prefixes it.
func allEqual[A attribute](attrs []A, value func(name string) (string, bool)) bool {
	for _, a := range attrs {
		name, _ := a.nameValue()
		if got, known := value(name); !known || !a.matches(got) {
			return false
		}
	}
	return true
}

// Roles IAM knows, with the text the role catalogue shows.
var roleDescriptions = map[string]string{
	auth.RoleReader:                 "As a reader, you can perform read-only actions within a service such as viewing service-specific resources.",
	auth.RoleReaderPlus:             "As a reader plus, you can read keys' payloads in addition to the reader's actions.",
	auth.RoleWriter:                 "As a writer, you have permissions beyond the reader role, including creating and editing service-specific resources.",
	auth.RoleManager:                "As a manager, you have permissions beyond the writer role to complete privileged actions as defined by the service.",
	auth.RoleKeyPurge:               "As a key purge role holder, you can purge keys that were deleted.",
	auth.RoleViewer:                 "As a viewer, you can view service instances, but you can't modify them.",
	auth.RoleOperator:               "As an operator, you can perform platform actions required to configure and operate service instances.",
	auth.RoleEditor:                 "As an editor, you can perform all platform actions except for managing the account and assigning access policies.",
	auth.RoleAdministrator:          "As an administrator, you can perform all platform actions based on the resource this role is being assigned, including assigning access policies to other users.",
	auth.RoleAuthorizationDelegator: "As an authorization delegator, the source service can create authorizations for its dependent services on the same target.",
}

const maxAttrValue = 1000

func invalidBody(op, format string, args ...any) *errs.Error {
	return errs.Ef(op, errs.Invalid, "invalid_body", format, args...).On("field", "body")
}

// normalize checks a policy request against the v1 rules and returns the
// policy it describes, with roles annotated and resource operators defaulted.
func (s *Service) normalize(op string, req PolicyRequest) (Policy, error) {
	p := Policy{Type: req.Type, Description: req.Description}
	switch req.Type {
	case TypeAccess, TypeAuthorization:
	case "":
		return Policy{}, invalidBody(op, "type is required: access or authorization")
	default:
		return Policy{}, invalidBody(op, "type %q is not supported: use access or authorization", req.Type)
	}
	if utf8.RuneCountInString(req.Description) > 300 || !utf8.ValidString(req.Description) {
		return Policy{}, invalidBody(op, "description must be valid text of at most 300 characters")
	}
	if len(req.Subjects) != 1 {
		return Policy{}, invalidBody(op, "subjects must hold exactly one subject")
	}
	if len(req.Resources) != 1 {
		return Policy{}, invalidBody(op, "resources must hold exactly one resource")
	}
	subjectAllowed := []string{"iam_id"}
	if req.Type == TypeAuthorization {
		subjectAllowed = []string{"accountId", "serviceName", "serviceInstance"}
	}
	seen := map[string]bool{}
	subject := PolicySubject{}
	for _, a := range req.Subjects[0].Attributes {
		if err := checkAttr(op, "subjects[0]", a.Name, a.Value, subjectAllowed, seen); err != nil {
			return Policy{}, err
		}
		subject.Attributes = append(subject.Attributes, a)
	}
	p.Subjects = []PolicySubject{subject}
	if req.Type == TypeAccess && !seen["iam_id"] {
		return Policy{}, invalidBody(op, "an access policy's subject must have the attribute iam_id")
	}
	if req.Type == TypeAuthorization && (!seen["accountId"] || !seen["serviceName"]) {
		return Policy{}, invalidBody(op, "an authorization's subject must have the attributes accountId and serviceName")
	}
	if len(req.Resources[0].Tags) > 0 {
		return Policy{}, invalidBody(op, "resources[0].tags are not supported: name the resource by its attributes")
	}
	seen = map[string]bool{}
	res := PolicyResource{}
	for _, a := range req.Resources[0].Attributes {
		if err := checkAttr(op, "resources[0]", a.Name, a.Value, []string{"accountId", "serviceName", "serviceInstance", "resourceType", "resource"}, seen); err != nil {
			return Policy{}, err
		}
		switch {
		case a.Operator == "" && !(a.Name == "resource" && strings.HasSuffix(a.Value, "*")):
			a.Operator = "stringEquals"
		case a.Operator == "stringEquals", a.Name == "resource" && (a.Operator == "" || a.Operator == opStringMatch):
		default:
			return Policy{}, invalidBody(op, "resources[0] attribute %s: operator %q is not supported: use stringEquals (or stringMatch for resource)", a.Name, a.Operator)
		}
		res.Attributes = append(res.Attributes, a)
	}
	p.Resources = []PolicyResource{res}
	if !seen["accountId"] {
		return Policy{}, invalidBody(op, "the resource must have the attribute accountId")
	}
	if req.Type == TypeAuthorization && !seen["serviceName"] {
		return Policy{}, invalidBody(op, "an authorization's resource must have the attribute serviceName")
	}
	if seen["resource"] && !seen["resourceType"] {
		return Policy{}, invalidBody(op, "the resource attribute resource needs resourceType")
	}
	if err := checkScopedResource(op, &p.Resources[0]); err != nil {
		return Policy{}, err
	}
	if len(req.Roles) == 0 {
		return Policy{}, invalidBody(op, "roles must hold at least one role")
	}
	for i, r := range req.Roles {
		desc, known := roleDescriptions[r.RoleID]
		if !known {
			return Policy{}, errs.Ef(op, errs.Invalid, "invalid_body", "roles[%d].role_id %q is not a role CRN such as %s", i, r.RoleID, auth.RoleReader).On("field", "role_id")
		}
		if req.Type == TypeAuthorization && r.RoleID != auth.RoleReader && r.RoleID != auth.RoleAuthorizationDelegator {
			return Policy{}, errs.Ef(op, errs.Invalid, "invalid_body", "roles[%d]: an authorization grants %s or %s", i, auth.RoleReader, auth.RoleAuthorizationDelegator).On("field", "role_id")
		}
		if p.HasRole(r.RoleID) {
			continue
		}
		p.Roles = append(p.Roles, PolicyRole{RoleID: r.RoleID, DisplayName: auth.RoleDisplayName(r.RoleID), Description: desc})
	}
	if req.Type == TypeAuthorization && !p.HasRole(auth.RoleReader) && p.HasRole(auth.RoleAuthorizationDelegator) {
		return Policy{}, invalidBody(op, "AuthorizationDelegator can only be granted together with Reader")
	}
	return p, nil
}

func checkAttr(op, where, name, value string, allowed []string, seen map[string]bool) error {
	if !slices.Contains(allowed, name) {
		return invalidBody(op, "%s attribute %q is not supported here: use %s", where, name, strings.Join(allowed, ", "))
	}
	if seen[name] {
		return invalidBody(op, "%s attribute %q is given twice", where, name)
	}
	seen[name] = true
	wildcards := "*?"
	if name == "resource" {
		wildcards = "" // checkScopedResource says where a wildcard may go
	}
	if value == "" || len(value) > maxAttrValue || !utf8.ValidString(value) || strings.ContainsAny(value, wildcards) {
		return invalidBody(op, "%s attribute %q needs a value of 1 to %d characters without wildcards", where, name, maxAttrValue)
	}
	return nil
}

// sameGrant reports whether two policies grant the same roles to the same
// subject on the same resource.
func sameGrant(a, b Policy) bool {
	if a.Type != b.Type || len(a.Roles) != len(b.Roles) {
		return false
	}
	for _, r := range a.Roles {
		if !b.HasRole(r.RoleID) {
			return false
		}
	}
	return sameAttrs(a.Subjects[0].Attributes, b.Subjects[0].Attributes, func(x SubjectAttribute) string { return x.Name + "=" + x.Value }) &&
		sameAttrs(a.Resources[0].Attributes, b.Resources[0].Attributes, func(x ResourceAttribute) string { return x.Name + "=" + x.Value })
}

func sameAttrs[T any](a, b []T, key func(T) string) bool {
	if len(a) != len(b) {
		return false
	}
	ka, kb := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		ka[i], kb[i] = key(a[i]), key(b[i])
	}
	sort.Strings(ka)
	sort.Strings(kb)
	return slices.Equal(ka, kb)
}

// --- the in-memory index ---

// policyIndex is an immutable snapshot of every policy. Writers build a new
// one and swap it in when their transaction commits, so Authorize reads a
// consistent set without locks and sees a revocation on the very next call.
type policyIndex struct {
	byID      map[string]*Policy
	bySubject map[string][]*Policy // active policies only
}

type policyIndexRef = atomic.Pointer[policyIndex]

func buildIndex(byID map[string]*Policy) *policyIndex {
	idx := &policyIndex{byID: byID, bySubject: map[string][]*Policy{}}
	for _, p := range byID {
		if p.State == StateActive {
			idx.bySubject[p.subjectKey()] = append(idx.bySubject[p.subjectKey()], p)
		}
	}
	return idx
}

func (s *Service) loadPolicies(ctx context.Context) error {
	byID, err := s.readPolicies(ctx)
	if err != nil {
		return err
	}
	s.policies.Store(buildIndex(byID))
	return nil
}

// readPolicies reads every stored policy.
func (s *Service) readPolicies(ctx context.Context) (map[string]*Policy, error) {
	const op = "iam.loadPolicies"
	byID := map[string]*Policy{}
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT doc, version FROM iam_policies`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			p, err := scanPolicy(rows)
			if err != nil {
				return err
			}
			byID[p.ID] = &p
		}
		return rows.Err()
	})
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return byID, nil
}

// applyPolicy puts a committed policy version into the index. Transactions
// may run their commit hooks out of order, so an older version never
// replaces a newer one.
func (s *Service) applyPolicy(p Policy) {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	old := s.policies.Load()
	if cur, ok := old.byID[p.ID]; ok && cur.Version >= p.Version {
		return
	}
	byID := make(map[string]*Policy, len(old.byID)+1)
	for k, v := range old.byID {
		byID[k] = v
	}
	byID[p.ID] = &p
	s.policies.Store(buildIndex(byID))
}

// savePolicyTx writes a policy version and schedules its index update.
func (s *Service) savePolicyTx(tx *store.Tx, p Policy, insert bool) error {
	const op = "iam.savePolicy"
	stored := p
	stored.Href = ""
	doc, err := json.Marshal(stored)
	if err != nil {
		return errs.Internalf(op, err)
	}
	if insert {
		_, err = tx.Exec(`INSERT INTO iam_policies (id, account_id, type, state, version, doc, created_at) VALUES (?,?,?,?,?,?,?)`,
			p.ID, p.AccountID(), p.Type, p.State, p.Version, string(doc), store.Time(p.CreatedAt))
	} else {
		_, err = tx.Exec(`UPDATE iam_policies SET state = ?, version = ?, doc = ? WHERE id = ?`, p.State, p.Version, string(doc), p.ID)
	}
	if err != nil {
		return errs.Internalf(op, err)
	}
	tx.OnCommit(func() { s.applyPolicy(stored) })
	tx.Changed(topicPolicy, p.ID)
	return nil
}

// policy returns a copy of the indexed policy id.
func (s *Service) policy(op, id string) (Policy, error) {
	p, ok := s.policies.Load().byID[id]
	if !ok {
		return Policy{}, errs.Ef(op, errs.NotExist, "policy_not_found", "Policy %s was not found", id)
	}
	return *p, nil
}

// --- API ---

func policyTarget(p Policy) audit.Target {
	return auditTarget(p.crn(), p.ID, "iam-am/policy")
}

// mayRead lets the caller read a policy it is the subject of, or one on a
// resource it administers.
func (s *Service) mayRead(ctx context.Context, caller *auth.Principal, p Policy) bool {
	if p.Type == TypeAccess && p.SubjectAttr("iam_id") == caller.IAMID {
		return true
	}
	return s.Authorize(ctx, caller, auth.PolicyRead, p.target()) == nil
}

// CreatePolicy creates an access policy or an authorization. The caller needs
// Administrator (iam.policy.update) on the policy's resource.
func (s *Service) CreatePolicy(ctx context.Context, req PolicyRequest) (Policy, error) {
	const op = "iam.CreatePolicy"
	c, err := caller(ctx, op)
	if err != nil {
		return Policy{}, err
	}
	p, err := s.normalize(op, req)
	if err != nil {
		return Policy{}, err
	}
	if err := s.Authorize(ctx, c, auth.PolicyWrite, p.target()); err != nil {
		s.recordFailure(ctx, "iam-am.policy.create", policyTarget(p), err)
		return Policy{}, err
	}
	return s.createPolicy(ctx, p, c.IAMID, false)
}

// createPolicy stores a checked and authorized policy.
func (s *Service) createPolicy(ctx context.Context, p Policy, createdBy string, idempotent bool) (Policy, error) {
	const op = "iam.CreatePolicy"
	now := s.clock.Now()
	p.ID, p.State, p.Version = newPolicyID(), StateActive, 1
	p.CreatedAt, p.LastModifiedAt, p.CreatedByID, p.LastModifiedByID = now, now, createdBy, createdBy
	out := p
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := checkSubjectTx(tx, op, p); err != nil {
			return err
		}
		// Looked up in the transaction, not the index: writers are serialised,
		// so two identical requests cannot both pass.
		existing, err := sameGrantTx(tx, op, p)
		if err != nil {
			return err
		}
		if existing != nil {
			if idempotent {
				out = *existing
				return nil
			}
			return errs.Ef(op, errs.Conflict, "policy_conflict_error", "Failed to create policy: policy %s already grants these roles to this subject on this resource", existing.ID)
		}
		if err := s.savePolicyTx(tx, p, true); err != nil {
			return err
		}
		return s.record(ctx, tx, "iam-am.policy.create", policyTarget(p), 201)
	})
	if err != nil {
		return Policy{}, err
	}
	return out, nil
}

// sameGrantTx finds an active policy of p's account granting what p grants.
func sameGrantTx(tx *store.Tx, op string, p Policy) (*Policy, error) {
	rows, err := tx.Query(`SELECT doc, version FROM iam_policies WHERE account_id = ? AND type = ? AND state = ?`, p.AccountID(), p.Type, StateActive)
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	defer rows.Close()
	for rows.Next() {
		other, err := scanPolicy(rows)
		if err != nil {
			return nil, errs.Internalf(op, err)
		}
		if sameGrant(p, other) {
			return &other, nil
		}
	}
	return nil, rows.Err()
}

func scanPolicy(row interface{ Scan(...any) error }) (Policy, error) {
	var doc string
	var p Policy
	if err := row.Scan(&doc, &p.Version); err != nil {
		return Policy{}, err
	}
	err := json.Unmarshal([]byte(doc), &p)
	return p, err
}

// checkSubjectTx refuses an access policy for an identity that does not
// exist or belongs to another account than the policy.
func checkSubjectTx(tx *store.Tx, op string, p Policy) error {
	if p.Type != TypeAccess {
		return nil
	}
	id, err := getIdentity(tx, op, p.SubjectAttr("iam_id"))
	if errs.Is(errs.NotExist, err) || (err == nil && id.AccountID != p.AccountID()) {
		return invalidBody(op, "subject iam_id %s is not an identity of account %s", p.SubjectAttr("iam_id"), p.AccountID())
	}
	return err
}

// GetPolicy returns a policy, active or deleted.
func (s *Service) GetPolicy(ctx context.Context, id string) (Policy, error) {
	const op = "iam.GetPolicy"
	c, err := caller(ctx, op)
	if err != nil {
		return Policy{}, err
	}
	p, err := s.policy(op, id)
	if err != nil {
		return Policy{}, err
	}
	if !s.mayRead(ctx, c, p) {
		err := errs.Ef(op, errs.Permission, "insufficent_permissions", "You are not allowed to read policy %s: it needs Administrator on its resource", id)
		s.recordFailure(ctx, "iam-am.policy.read", policyTarget(p), err)
		return Policy{}, err
	}
	return p, nil
}

// PolicyFilter selects policies to list.
type PolicyFilter struct {
	AccountID   string // required
	IAMID       string // access policies of this subject
	Type        string // access | authorization | ""
	ServiceName string // resource (target) serviceName
	SourceName  string // authorization subject serviceName
	State       string // active (default) | deleted
	Sort        string // id, type, created_at (default), created_by_id, last_modified_at, last_modified_by_id, state; "-" prefix: descending
	Limit       int
	Start       string
}

// policySortKeys are the fields a policy list can be sorted by.
var policySortKeys = map[string]func(Policy) string{
	"id":                  func(p Policy) string { return p.ID },
	"type":                func(p Policy) string { return p.Type },
	"href":                func(p Policy) string { return p.ID },
	"created_at":          func(p Policy) string { return sortableTime(p.CreatedAt) },
	"created_by_id":       func(p Policy) string { return p.CreatedByID },
	"last_modified_at":    func(p Policy) string { return sortableTime(p.LastModifiedAt) },
	"last_modified_by_id": func(p Policy) string { return p.LastModifiedByID },
	"state":               func(p Policy) string { return p.State },
}

// sortableTime has a fixed width, so it sorts as the time does (RFC 3339
// with nanoseconds drops trailing zeros and does not).
func sortableTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000") }

// PolicyPage is one page of a policy list.
type PolicyPage struct {
	Limit    int
	Next     string // start of the next page, "" on the last
	Policies []Policy
}

// ListPolicies lists the policies of an account that the caller may read,
// oldest first.
func (s *Service) ListPolicies(ctx context.Context, f PolicyFilter) (PolicyPage, error) {
	const op = "iam.ListPolicies"
	c, err := caller(ctx, op)
	if err != nil {
		return PolicyPage{}, err
	}
	if f.AccountID == "" {
		return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "account_id is a required query parameter").On("query_param", "account_id")
	}
	switch f.Type {
	case "", TypeAccess, TypeAuthorization:
	default:
		return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "type must be access or authorization").On("query_param", "type")
	}
	switch f.State {
	case "":
		f.State = StateActive
	case StateActive, StateDeleted:
	default:
		return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "state must be active or deleted").On("query_param", "state")
	}
	limit, offset := 50, 0
	if f.Limit != 0 {
		if f.Limit < 1 || f.Limit > 100 {
			return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "limit must be between 1 and 100").On("query_param", "limit")
		}
		limit = f.Limit
	}
	if f.Start != "" {
		if offset, err = strconv.Atoi(f.Start); err != nil || offset < 0 {
			return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "start is not a value this server returned").On("query_param", "start")
		}
	}
	var all []Policy
	for _, p := range s.policies.Load().byID {
		if p.AccountID() != f.AccountID || p.State != f.State || (f.Type != "" && p.Type != f.Type) ||
			(f.IAMID != "" && p.SubjectAttr("iam_id") != f.IAMID) ||
			(f.ServiceName != "" && p.ResourceAttr("serviceName") != f.ServiceName) ||
			(f.SourceName != "" && p.SubjectAttr("serviceName") != f.SourceName) {
			continue
		}
		if s.mayRead(ctx, c, *p) {
			all = append(all, *p)
		}
	}
	field, desc := strings.CutPrefix(f.Sort, "-")
	if field == "" {
		field = "created_at"
	}
	key, ok := policySortKeys[field]
	if !ok {
		return PolicyPage{}, errs.E(op, errs.Invalid, "invalid_parameter", "sort must be one of id, type, href, created_at, created_by_id, last_modified_at, last_modified_by_id, state, optionally prefixed by -").On("query_param", "sort")
	}
	// Ties are broken by id so that pages never overlap.
	sort.Slice(all, func(i, j int) bool {
		ki, kj := key(all[i]), key(all[j])
		if ki == kj {
			return all[i].ID < all[j].ID
		}
		return (ki < kj) != desc
	})
	page := PolicyPage{Limit: limit, Policies: []Policy{}}
	if offset < len(all) {
		end := min(offset+limit, len(all))
		page.Policies = all[offset:end]
		if end < len(all) {
			page.Next = strconv.Itoa(end)
		}
	}
	return page, nil
}

// UpdatePolicy replaces an active policy. ifMatch must be its entity tag; the
// caller needs Administrator on both the old and the new resource.
func (s *Service) UpdatePolicy(ctx context.Context, id, ifMatch string, req PolicyRequest) (Policy, error) {
	const op = "iam.UpdatePolicy"
	c, err := caller(ctx, op)
	if err != nil {
		return Policy{}, err
	}
	np, err := s.normalize(op, req)
	if err != nil {
		return Policy{}, err
	}
	if err := s.db.Read(ctx, func(tx *store.Tx) error { return checkSubjectTx(tx, op, np) }); err != nil {
		return Policy{}, err
	}
	return s.changePolicy(ctx, c, op, id, ifMatch, "iam-am.policy.update", s.administers(c), func(old *Policy) error {
		if np.Type != old.Type {
			return invalidBody(op, "a policy's type cannot change")
		}
		if old.State != StateActive {
			return errs.Ef(op, errs.NotExist, "policy_not_found", "Policy %s was deleted: restore it before changing it", id)
		}
		if err := s.Authorize(ctx, c, auth.PolicyWrite, np.target()); err != nil {
			return err
		}
		old.Description, old.Subjects, old.Roles, old.Resources = np.Description, np.Subjects, np.Roles, np.Resources
		return nil
	})
}

// RestorePolicy makes a deleted policy active again (PATCH state=active).
func (s *Service) RestorePolicy(ctx context.Context, id, ifMatch string) (Policy, error) {
	const op = "iam.RestorePolicy"
	c, err := caller(ctx, op)
	if err != nil {
		return Policy{}, err
	}
	return s.changePolicy(ctx, c, op, id, ifMatch, "iam-am.policy.update", s.administers(c), func(p *Policy) error {
		p.State = StateActive
		return nil
	})
}

// DeletePolicy deletes a policy softly: it stops granting at once and stays
// listable with state=deleted.
func (s *Service) DeletePolicy(ctx context.Context, id string) error {
	const op = "iam.DeletePolicy"
	c, err := caller(ctx, op)
	if err != nil {
		return err
	}
	_, err = s.changePolicy(ctx, c, op, id, "", "iam-am.policy.delete", s.administers(c), func(p *Policy) error {
		if p.State != StateActive {
			return errs.Ef(op, errs.NotExist, "policy_not_found", "Policy %s was not found", id)
		}
		p.State = StateDeleted
		return nil
	})
	return err
}

// administers is the check that the caller holds Administrator
// (iam.policy.update) on a policy's resource.
func (s *Service) administers(c *auth.Principal) func(context.Context, Policy) error {
	return func(ctx context.Context, p Policy) error { return s.Authorize(ctx, c, auth.PolicyWrite, p.target()) }
}

// changePolicy applies change to policy id once allowed says the caller may,
// with optimistic concurrency on ifMatch and an audit event.
func (s *Service) changePolicy(ctx context.Context, c *auth.Principal, op, id, ifMatch, action string,
	allowed func(context.Context, Policy) error, change func(*Policy) error) (Policy, error) {
	var out Policy
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		// Read the row, not the index: another writer's commit hook may not
		// have reached the index yet.
		p, err := readPolicyTx(tx, op, id)
		if err != nil {
			return err
		}
		if err := allowed(ctx, p); err != nil {
			return err
		}
		if ifMatch != "" && ifMatch != "*" && strings.Trim(strings.TrimPrefix(ifMatch, "W/"), `"`) != p.ETag() {
			return errs.E(op, errs.Conflict, "precondition_failed", "The policy was changed since it was read: If-Match does not match its entity tag")
		}
		before := p.State
		if err := change(&p); err != nil {
			return err
		}
		p.Version++
		p.LastModifiedAt, p.LastModifiedByID = s.clock.Now(), c.IAMID
		if c.Type == auth.Service {
			p.LastModifiedByID = "crn-" + c.SourceCRN
		}
		if err := s.savePolicyTx(tx, p, false); err != nil {
			return err
		}
		if p.Type == TypeAuthorization && before == StateActive && p.State == StateDeleted {
			deleted := p
			tx.OnCommit(func() { s.authorizationWasDeleted(deleted) })
		}
		out = p
		return s.record(ctx, tx, action, policyTarget(p), 200)
	})
	if errs.Is(errs.Permission, err) {
		// Recorded after the transaction: the audit log needs the writer too.
		p, _ := s.policy(op, id)
		p.ID = id
		s.recordFailure(ctx, action, policyTarget(p), err)
	}
	return out, err
}

func readPolicyTx(tx *store.Tx, op, id string) (Policy, error) {
	p, err := scanPolicy(tx.QueryRow(`SELECT doc, version FROM iam_policies WHERE id = ?`, id))
	if store.IsNoRows(err) {
		return Policy{}, errs.Ef(op, errs.NotExist, "policy_not_found", "Policy %s was not found", id)
	}
	if err != nil {
		return Policy{}, errs.Internalf(op, err)
	}
	return p, nil
}

// deleteSubjectPoliciesTx deletes the active access policies of a deleted identity.
func (s *Service) deleteSubjectPoliciesTx(ctx context.Context, tx *store.Tx, iamID, by string) error {
	// From the rows, not the index: a policy another node just created
	// may not have reached it.
	subjects, err := activePoliciesOfTx(tx, "iam:"+iamID)
	if err != nil {
		return err
	}
	for _, p := range subjects {
		p.State, p.Version = StateDeleted, p.Version+1
		p.LastModifiedAt, p.LastModifiedByID = s.clock.Now(), by
		if err := s.savePolicyTx(tx, p, false); err != nil {
			return err
		}
		if err := s.record(ctx, tx, "iam-am.policy.delete", policyTarget(p), 204); err != nil {
			return err
		}
	}
	return nil
}

// activePoliciesOfTx reads the active policies of a subject key.
func activePoliciesOfTx(tx *store.Tx, subject string) ([]Policy, error) {
	rows, err := tx.Query(`SELECT doc, version FROM iam_policies WHERE state = ?`, StateActive)
	if err != nil {
		return nil, errs.Internalf("iam.deleteSubjectPolicies", err)
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		p, err := scanPolicy(rows)
		if err != nil {
			return nil, errs.Internalf("iam.deleteSubjectPolicies", err)
		}
		if p.subjectKey() == subject {
			out = append(out, p)
		}
	}
	return out, rows.Err()
}

func newPolicyID() string { return uuid.NewString() }
