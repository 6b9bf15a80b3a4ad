// Package errs gives Keyline's errors an operation, a kind and an API reason code,
// so that each API edge maps them to its own status code and body in one place.
package errs

import (
	"errors"
	"fmt"
)

// Kind says what class of failure an error is; the edge turns it into an HTTP status.
type Kind uint8

const (
	Other            Kind = iota // unclassified: 500
	Invalid                      // bad input: 400
	Unauthenticated              // no or bad credentials: 401
	Permission                   // authenticated but not allowed: 403
	NotExist                     // 404
	Conflict                     // state forbids the action: 409
	Gone                         // deleted: 410
	TooLarge                     // body over the limit: 413
	Unprocessable                // well-formed but cannot be processed: 422
	Unavailable                  // a dependency is down: 503
	Internal                     // a bug or corrupted state: 500
	UnsupportedMedia             // a body in a Content-Type the API does not take: 415
)

var kindNames = [...]string{"other", "invalid", "unauthenticated", "permission", "not_exist", "conflict", "gone", "too_large", "unprocessable", "unavailable", "internal", "unsupported_media"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

// Status is the HTTP status code for the kind.
func (k Kind) Status() int {
	switch k {
	case Invalid:
		return 400
	case Unauthenticated:
		return 401
	case Permission:
		return 403
	case NotExist:
		return 404
	case Conflict:
		return 409
	case Gone:
		return 410
	case TooLarge:
		return 413
	case Unprocessable:
		return 422
	case Unavailable:
		return 503
	case UnsupportedMedia:
		return 415
	}
	return 500
}

// Error is a Keyline error. Msg is safe to show to the caller: it never holds
// key material or record data. Err, if any, is the underlying cause and is
// only logged.
type Error struct {
	Op     string // the operation, e.g. "kms.Wrap"
	Kind   Kind
	Code   string // the API reason code, e.g. PROTECTED_RESOURCE_ERR
	Msg    string // a sentence for the caller
	Target *Target
	Err    error
}

// Target names the request field or query parameter an error is about.
type Target struct {
	Type string `json:"type"` // "field", "query_param" or "header"
	Name string `json:"name"`
}

// E builds an error.
func E(op string, kind Kind, code, msg string) *Error {
	return &Error{Op: op, Kind: kind, Code: code, Msg: msg}
}

// Ef builds an error with a formatted message.
func Ef(op string, kind Kind, code, format string, args ...any) *Error {
	return &Error{Op: op, Kind: kind, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// On attaches the field or parameter the error is about.
func (e *Error) On(typ, name string) *Error {
	e.Target = &Target{Type: typ, Name: name}
	return e
}

// Because records the underlying cause (logged, never shown).
func (e *Error) Because(err error) *Error {
	e.Err = err
	return e
}

func (e *Error) Error() string {
	s := e.Op
	if s != "" {
		s += ": "
	}
	s += e.Msg
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Internalf wraps an unexpected failure: the caller sees a generic message.
func Internalf(op string, err error) *Error {
	return &Error{Op: op, Kind: Internal, Code: "INTERNAL_ERR", Msg: "An internal error occurred", Err: err}
}

// As returns the *Error in err's chain, or nil.
func As(err error) *Error {
	if err == nil {
		return nil // without the heap allocation errors.As's target costs
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// KindOf is the kind of err (Other when it is not an *Error).
func KindOf(err error) Kind {
	if e := As(err); e != nil {
		return e.Kind
	}
	return Other
}

// Is reports whether err is an *Error of the given kind.
func Is(kind Kind, err error) bool { return err != nil && KindOf(err) == kind }
