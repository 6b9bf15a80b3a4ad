package kms

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// ListKeysOptions filters, sorts and pages a key list (§3.3 of the API).
type ListKeysOptions struct {
	Limit, Offset int
	States        []int // nil: every state but Destroyed
	Extractable   *bool
	Search        string // [not:][exact:][escape:][alias:|name:]<text>
	Sort          string // comma list of fields, '-' for descending; default id
	Filter        string // space-separated prop=[gt:|gte:|lt:|lte:]value
	KeyRing       string // only keys of this ring
}

// KeyList is one page of keys and the number of keys that matched.
type KeyList struct {
	Keys  []Key
	Total int
}

// ListKeys lists an instance's keys.
func (s *Service) ListKeys(ctx context.Context, guid string, o ListKeysOptions) (KeyList, error) {
	return s.listKeys(ctx, "kms.ListKeys", auth.KMSKeyList, guid, o)
}

// CountKeys counts the keys ListKeys would list (HEAD /keys).
func (s *Service) CountKeys(ctx context.Context, guid string, o ListKeysOptions) (int, error) {
	o.Limit, o.Offset = 0, 0
	l, err := s.listKeys(ctx, "kms.CountKeys", auth.KMSKeyHead, guid, o)
	return l.Total, err
}

func (s *Service) listKeys(ctx context.Context, op, action, guid string, o ListKeysOptions) (KeyList, error) {
	var out KeyList
	err := s.onInstance(ctx, op, guid, action, false, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		match, err := compileKeyQuery(op, o)
		if err != nil {
			return err
		}
		less, err := compileSort(op, o.Sort)
		if err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT `+keyCols+` WHERE k.instance_guid = ? AND (? = '' OR k.key_ring = ?)`, in.GUID, o.KeyRing, o.KeyRing)
		if err != nil {
			return errs.Internalf(op, err)
		}
		var all []*keyRow
		for rows.Next() {
			k, err := scanKey(rows)
			if err != nil {
				rows.Close()
				return errs.Internalf(op, err)
			}
			all = append(all, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return errs.Internalf(op, err)
		}
		aliases, err := instanceAliases(tx, in.GUID)
		if err != nil {
			return err
		}
		now := s.clock.Now()
		var keys []Key
		for _, k := range all {
			k.Aliases = aliases[k.ID]
			v := k.view(in, now)
			if match(&v) {
				keys = append(keys, v)
			}
		}
		slices.SortStableFunc(keys, less)
		out.Total = len(keys)
		out.Keys = page(keys, o.Limit, o.Offset)
		ev.ResponseData["totalResources"] = out.Total
		if o.KeyRing != "" {
			ev.RequestData["keyRingId"] = o.KeyRing
		}
		return nil
	})
	return out, err
}

func instanceAliases(tx *store.Tx, guid string) (map[string][]string, error) {
	rows, err := tx.Query(`SELECT key_id, alias FROM kms_aliases WHERE instance_guid = ? ORDER BY creation_date, alias`, guid)
	if err != nil {
		return nil, errs.Internalf("kms.instanceAliases", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var id, a string
		if err := rows.Scan(&id, &a); err != nil {
			return nil, errs.Internalf("kms.instanceAliases", err)
		}
		out[id] = append(out[id], a)
	}
	return out, rows.Err()
}

func badQuery(op, name, must string) error {
	return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param '"+name+"' must be: "+must).On("query_param", name)
}

// compileKeyQuery turns states, extractable, search and filter into one predicate.
func compileKeyQuery(op string, o ListKeysOptions) (func(*Key) bool, error) {
	states := map[int]bool{StatePreActivation: true, StateActive: true, StateSuspended: true, StateDeactivated: true}
	if o.States != nil {
		states = map[int]bool{}
		for _, st := range o.States {
			if st < 0 || st > 5 || st == 4 {
				return nil, badQuery(op, "state", "a comma list of 0, 1, 2, 3 and 5")
			}
			states[st] = true
		}
	}
	search, err := parseSearch(op, o.Search)
	if err != nil {
		return nil, err
	}
	filters, err := parseFilter(op, o.Filter)
	if err != nil {
		return nil, err
	}
	return func(k *Key) bool {
		if !states[k.State] || (o.Extractable != nil && k.Extractable != *o.Extractable) {
			return false
		}
		if search != nil && !search(k) {
			return false
		}
		for _, f := range filters {
			if !f(k) {
				return false
			}
		}
		return true
	}, nil
}

func parseSearch(op, q string) (func(*Key) bool, error) {
	q = strings.TrimSuffix(q, ",") // the Go client appends a comma
	if q == "" {
		return nil, nil
	}
	var not, exact, inAlias, inName bool
	for {
		switch {
		case strings.HasPrefix(q, "not:"):
			not, q = true, q[4:]
			continue
		case strings.HasPrefix(q, "exact:"):
			exact, q = true, q[6:]
			continue
		case strings.HasPrefix(q, "alias:"):
			inAlias, q = true, q[6:]
			continue
		case strings.HasPrefix(q, "name:"):
			inName, q = true, q[5:]
			continue
		case strings.HasPrefix(q, "escape:"):
			q = q[7:]
		}
		break
	}
	if q == "" || len(q) > 90 {
		return nil, badQuery(op, "search", "1 to 90 characters after its modifiers")
	}
	byID := !inAlias && !inName
	if byID {
		inAlias, inName = true, true
	}
	lq := strings.ToLower(q)
	hit := func(s string) bool {
		if exact {
			return s == q
		}
		return strings.Contains(strings.ToLower(s), lq)
	}
	return func(k *Key) bool {
		found := byID && k.ID == q
		if inName && hit(k.Name) {
			found = true
		}
		if inAlias {
			for _, a := range k.Aliases {
				if hit(a) {
					found = true
				}
			}
		}
		return found != not
	}, nil
}

var keyDateFields = map[string]func(*Key) *time.Time{
	"creationDate":   func(k *Key) *time.Time { return &k.CreationDate },
	"lastUpdateDate": func(k *Key) *time.Time { return k.LastUpdateDate },
	"lastRotateDate": func(k *Key) *time.Time { return k.LastRotateDate },
	"deletionDate":   func(k *Key) *time.Time { return k.DeletionDate },
	"expirationDate": func(k *Key) *time.Time { return k.ExpirationDate },
}

func parseFilter(op, f string) ([]func(*Key) bool, error) {
	var out []func(*Key) bool
	for _, term := range strings.Fields(f) {
		prop, val, ok := strings.Cut(term, "=")
		if !ok {
			return nil, badQuery(op, "filter", "space-separated prop=value terms")
		}
		switch prop {
		case "state":
			want := map[int]bool{}
			for _, s := range strings.Split(val, ",") {
				if len(s) != 1 || s[0] < '0' || s[0] > '5' {
					return nil, badQuery(op, "filter", "state=<comma list of states>")
				}
				want[int(s[0]-'0')] = true
			}
			out = append(out, func(k *Key) bool { return want[k.State] })
		case "extractable":
			if val != "true" && val != "false" {
				return nil, badQuery(op, "filter", "extractable=true or extractable=false")
			}
			b := val == "true"
			out = append(out, func(k *Key) bool { return k.Extractable == b })
		default:
			get, ok := keyDateFields[prop]
			if !ok {
				return nil, badQuery(op, "filter", "terms on creationDate, lastUpdateDate, lastRotateDate, deletionDate, expirationDate, state or extractable")
			}
			if val == "none" {
				out = append(out, func(k *Key) bool { return get(k) == nil })
				continue
			}
			cmpOp := "eq"
			for _, p := range []string{"gte", "lte", "gt", "lt"} {
				if strings.HasPrefix(val, p+":") {
					cmpOp, val = p, val[len(p)+1:]
					break
				}
			}
			t, err := time.Parse(time.RFC3339, strings.Trim(val, `"'`))
			if err != nil {
				return nil, badQuery(op, "filter", "dates in RFC 3339, optionally after gt:, gte:, lt: or lte:")
			}
			out = append(out, func(k *Key) bool {
				v := get(k)
				if v == nil {
					return false
				}
				c := v.Compare(t)
				switch cmpOp {
				case "gt":
					return c > 0
				case "gte":
					return c >= 0
				case "lt":
					return c < 0
				case "lte":
					return c <= 0
				}
				return v.Truncate(time.Second).Equal(t.Truncate(time.Second))
			})
		}
	}
	return out, nil
}

func timeKey(t *time.Time) int64 {
	if t == nil {
		return -1 << 62
	}
	return t.UnixNano()
}

func boolKey(b bool) int {
	if b {
		return 1
	}
	return 0
}

var keySortFields = map[string]func(a, b *Key) int{
	"id":             func(a, b *Key) int { return strings.Compare(a.ID, b.ID) },
	"state":          func(a, b *Key) int { return cmp.Compare(a.State, b.State) },
	"extractable":    func(a, b *Key) int { return cmp.Compare(boolKey(a.Extractable), boolKey(b.Extractable)) },
	"imported":       func(a, b *Key) int { return cmp.Compare(boolKey(a.Imported), boolKey(b.Imported)) },
	"creationDate":   func(a, b *Key) int { return a.CreationDate.Compare(b.CreationDate) },
	"lastUpdateDate": func(a, b *Key) int { return cmp.Compare(timeKey(a.LastUpdateDate), timeKey(b.LastUpdateDate)) },
	"lastRotateDate": func(a, b *Key) int { return cmp.Compare(timeKey(a.LastRotateDate), timeKey(b.LastRotateDate)) },
	"deletionDate":   func(a, b *Key) int { return cmp.Compare(timeKey(a.DeletionDate), timeKey(b.DeletionDate)) },
	"expirationDate": func(a, b *Key) int { return cmp.Compare(timeKey(a.ExpirationDate), timeKey(b.ExpirationDate)) },
}

func compileSort(op, spec string) (func(a, b Key) int, error) {
	if spec == "" {
		spec = "id"
	}
	type field struct {
		cmp  func(a, b *Key) int
		desc bool
	}
	var fields []field
	for _, f := range strings.Split(spec, ",") {
		desc := strings.HasPrefix(f, "-")
		c, ok := keySortFields[strings.TrimPrefix(f, "-")]
		if !ok {
			return nil, badQuery(op, "sort", "a comma list of id, state, extractable, imported, creationDate, lastUpdateDate, lastRotateDate, deletionDate, expirationDate")
		}
		fields = append(fields, field{c, desc})
	}
	return func(a, b Key) int {
		for _, f := range fields {
			c := f.cmp(&a, &b)
			if f.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return strings.Compare(a.ID, b.ID)
	}, nil
}
