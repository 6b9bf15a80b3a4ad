package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"sync"

	"github.com/keyline/keyline/internal/store"
)

// storedBody is how an event's body is kept in its row: what the row's
// columns already hold (id, time, action, outcome, severity, target and
// initiator ids, correlation id) and what follows from them (the default
// message, observer, reason type, address type, authn id and name) is left
// out, and the keys are short. Every event is written once and most are
// never read, so the smaller row (fewer WAL pages per group commit) is
// worth the work of rebuilding the event on the rare read.
type storedBody struct {
	EventTime        string         `json:"t,omitempty"` // only when not the row's time
	Message          *string        `json:"m,omitempty"` // nil: messageFor(action, outcome)
	InitiatorName    string         `json:"in,omitempty"`
	InitiatorType    string         `json:"it,omitempty"`
	Credential       string         `json:"ic,omitempty"`
	HostAddress      string         `json:"ha,omitempty"`
	HostAddressType  *string        `json:"hat,omitempty"` // nil: addressType(address)
	HostAgent        string         `json:"hu,omitempty"`
	AuthnID          *string        `json:"ai,omitempty"` // nil: the initiator id
	AuthnName        *string        `json:"an,omitempty"` // nil: the initiator name
	TargetName       string         `json:"tn,omitempty"`
	TargetType       string         `json:"tt,omitempty"`
	Observer         *string        `json:"o,omitempty"` // nil: "ActivityTracker"
	ReasonCode       int            `json:"rc,omitempty"`
	ReasonType       *string        `json:"rt,omitempty"` // nil: reasonType(code)
	ReasonForFailure string         `json:"rf,omitempty"`
	RequestData      map[string]any `json:"rq,omitempty"`
	ResponseData     map[string]any `json:"rs,omitempty"`
	DataEvent        bool           `json:"de,omitempty"`
	LogSourceCRN     string         `json:"ls,omitempty"`
	NoServiceCopy    bool           `json:"nsc,omitempty"` // saveServiceCopy is usually true
}

const observerName = "ActivityTracker"

// unlessEqual is nil when v is the value the reader derives anyway.
func unlessEqual(v, derived string) *string {
	if v == derived {
		return nil
	}
	p := new(string) // only here: taking &v would move v to the heap on every call
	*p = v
	return p
}

func orDerived(v *string, derived string) string {
	if v == nil {
		return derived
	}
	return *v
}

// encodeBody is the stored body of ev; derivedTime is the eventTime a
// reader derives from the row's time (formatTime of it).
func encodeBody(ev *Event, derivedTime string) (string, error) {
	// Encoded into a reused buffer: the row keeps only the string.
	buf := bodyBuffers.Get().(*[]byte)
	b := bodyOf(ev, derivedTime)
	out, err := b.appendJSON((*buf)[:0])
	body := string(out)
	if cap(out) <= maxPooledBody {
		*buf = out[:0]
		bodyBuffers.Put(buf)
	}
	return body, err
}

// bodyBuffers holds encodeBody's buffers; one that grew past maxPooledBody
// (an event with large request data) is left to the collector.
var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBody = 16 << 10

// bodyOf is what encodeBody stores of ev.
func bodyOf(ev *Event, derivedTime string) storedBody {
	in := ev.Initiator
	b := storedBody{
		Message:          unlessEqual(ev.Message, messageFor(ev.Action, ev.Outcome)),
		InitiatorName:    in.Name,
		InitiatorType:    in.TypeURI,
		Credential:       in.Credential.Type,
		HostAddress:      in.Host.Address,
		HostAddressType:  unlessEqual(in.Host.AddressType, addressType(in.Host.Address)),
		HostAgent:        in.Host.Agent,
		AuthnID:          unlessEqual(in.AuthnID, in.ID),
		AuthnName:        unlessEqual(in.AuthnName, in.Name),
		TargetName:       ev.Target.Name,
		TargetType:       ev.Target.TypeURI,
		Observer:         unlessEqual(ev.Observer.Name, observerName),
		ReasonCode:       ev.Reason.ReasonCode,
		ReasonType:       unlessEqual(ev.Reason.ReasonType, reasonType(ev.Reason.ReasonCode)),
		ReasonForFailure: ev.Reason.ReasonForFailure,
		RequestData:      ev.RequestData,
		ResponseData:     ev.ResponseData,
		DataEvent:        ev.DataEvent,
		LogSourceCRN:     ev.LogSourceCRN,
		NoServiceCopy:    !ev.SaveServiceCopy,
	}
	if ev.EventTime != derivedTime {
		b.EventTime = ev.EventTime
	}
	return b
}

// appendJSON appends b as json.Marshal writes it, byte for byte (a fuzz
// test compares the two), without reflection: every wrap and unwrap stores
// one, and encoding/json's map and struct encoders were the bulk of a
// caller's share of the audit trail.
func (b *storedBody) appendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, '{')
	str := func(key, v string) {
		if v != "" {
			dst = appendKey(dst, key)
			dst = appendJSONString(dst, v)
		}
	}
	ptr := func(key string, v *string) {
		if v != nil {
			dst = appendKey(dst, key)
			dst = appendJSONString(dst, *v)
		}
	}
	str("t", b.EventTime)
	ptr("m", b.Message)
	str("in", b.InitiatorName)
	str("it", b.InitiatorType)
	str("ic", b.Credential)
	str("ha", b.HostAddress)
	ptr("hat", b.HostAddressType)
	str("hu", b.HostAgent)
	ptr("ai", b.AuthnID)
	ptr("an", b.AuthnName)
	str("tn", b.TargetName)
	str("tt", b.TargetType)
	ptr("o", b.Observer)
	if b.ReasonCode != 0 {
		dst = appendKey(dst, "rc")
		dst = strconv.AppendInt(dst, int64(b.ReasonCode), 10)
	}
	ptr("rt", b.ReasonType)
	str("rf", b.ReasonForFailure)
	var err error
	if dst, err = appendMap(dst, "rq", b.RequestData); err != nil {
		return nil, err
	}
	if dst, err = appendMap(dst, "rs", b.ResponseData); err != nil {
		return nil, err
	}
	if b.DataEvent {
		dst = append(appendKey(dst, "de"), "true"...)
	}
	str("ls", b.LogSourceCRN)
	if b.NoServiceCopy {
		dst = append(appendKey(dst, "nsc"), "true"...)
	}
	return append(dst, '}'), nil
}

// appendKey appends a member's key (one of storedBody's, which need no
// escaping) and its colon, after a comma unless it is the first.
func appendKey(dst []byte, key string) []byte {
	if dst[len(dst)-1] != '{' {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

// appendMap appends m as encoding/json does (keys sorted), leaving it out
// when empty (omitempty). String values, nearly all of them, are written
// here; any other value by encoding/json.
func appendMap(dst []byte, key string, m map[string]any) ([]byte, error) {
	if len(m) == 0 {
		return dst, nil
	}
	dst = appendKey(dst, key)
	var small [8]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(appendJSONString(dst, k), ':')
		if s, ok := m[k].(string); ok {
			dst = appendJSONString(dst, s)
			continue
		}
		v, err := json.Marshal(m[k])
		if err != nil {
			return nil, err
		}
		dst = append(dst, v...)
	}
	return append(dst, '}'), nil
}

// appendJSONString appends s quoted as json.Marshal quotes it. Strings of
// printable ASCII that encoding/json leaves alone (no quote, backslash or
// HTML character) are copied; any other goes through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// storedRow is an event's row as read back.
type storedRow struct {
	seq                                                                 int64
	id, eventTime, action, outcome, severity, target, initiator, corrID string
	body                                                                []byte
}

// rowColumns are the columns scanned into a storedRow, in its order.
const rowColumns = `seq, id, event_time, action, outcome, severity, target_id, initiator_id, correlation_id, body`

func (r *storedRow) dest() []any {
	return []any{&r.seq, &r.id, &r.eventTime, &r.action, &r.outcome, &r.severity, &r.target, &r.initiator, &r.corrID, &r.body}
}

// event rebuilds the event a row stores. Rows written before the compact
// body hold the whole event as JSON (it starts with its "id").
func (r *storedRow) event() (Event, error) {
	var ev Event
	if bytes.HasPrefix(r.body, []byte(`{"id":`)) {
		err := json.Unmarshal(r.body, &ev)
		return ev, err
	}
	var b storedBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		return ev, err
	}
	ev = Event{
		ID:        r.id,
		EventTime: b.EventTime,
		Action:    r.action,
		Outcome:   r.outcome,
		Message:   orDerived(b.Message, messageFor(r.action, r.outcome)),
		Severity:  r.severity,
		Initiator: Initiator{
			ID:         r.initiator,
			Name:       b.InitiatorName,
			TypeURI:    b.InitiatorType,
			Credential: Credential{Type: b.Credential},
			Host:       Host{Address: b.HostAddress, AddressType: orDerived(b.HostAddressType, addressType(b.HostAddress)), Agent: b.HostAgent},
			AuthnID:    orDerived(b.AuthnID, r.initiator),
			AuthnName:  orDerived(b.AuthnName, b.InitiatorName),
		},
		Target:          Target{ID: r.target, Name: b.TargetName, TypeURI: b.TargetType},
		Observer:        Observer{Name: orDerived(b.Observer, observerName)},
		Reason:          Reason{ReasonCode: b.ReasonCode, ReasonType: orDerived(b.ReasonType, reasonType(b.ReasonCode)), ReasonForFailure: b.ReasonForFailure},
		RequestData:     b.RequestData,
		ResponseData:    b.ResponseData,
		CorrelationID:   r.corrID,
		DataEvent:       b.DataEvent,
		LogSourceCRN:    b.LogSourceCRN,
		SaveServiceCopy: !b.NoServiceCopy,
	}
	if ev.EventTime == "" {
		ev.EventTime = formatTime(store.ParseTime(r.eventTime))
	}
	return ev, nil
}
