package kpapi

import (
	"net/http"
	"sync"

	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
)

// decodeActionFast decodes the body wrap, unwrap and rewrap calls nearly
// always carry, {"plaintext":"…"} or {"ciphertext":"…","aad":["…"]}, without
// encoding/json's reflection, and reports whether it did. It takes only
// what encoding/json reads the same way: the keys spelled exactly as
// actionRequest's tags, once each, with no white space between tokens,
// values that are strings of printable ASCII without escapes (base64 is) or
// arrays of them. Anything else, bad input included, is left to
// encoding/json, so errors are unchanged; a fuzz test checks that whatever
// this accepts, encoding/json decodes to the same request.
func decodeActionFast(body []byte, v *actionRequest) bool {
	if len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return false
	}
	var (
		out                           actionRequest
		plaintext, ciphertext, aadSet bool
	)
	i := 1
	if body[i] == '}' {
		return i == len(body)-1
	}
	for {
		key, next, ok := plainString(body, i)
		if !ok || next >= len(body) || body[next] != ':' {
			return false
		}
		i = next + 1
		switch key {
		case "plaintext", "ciphertext":
			s, next, ok := plainString(body, i)
			if !ok {
				return false
			}
			i = next
			if key == "plaintext" {
				if plaintext {
					return false
				}
				plaintext, out.Plaintext = true, &s
			} else {
				if ciphertext {
					return false
				}
				ciphertext, out.Ciphertext = true, &s
			}
		case "aad":
			if aadSet || i >= len(body) || body[i] != '[' {
				return false
			}
			aadSet, out.AAD = true, []string{}
			i++
			if i < len(body) && body[i] == ']' {
				i++
				break
			}
			for {
				s, next, ok := plainString(body, i)
				if !ok || next >= len(body) {
					return false
				}
				out.AAD = append(out.AAD, s)
				i = next + 1
				if body[next] == ']' {
					break
				}
				if body[next] != ',' {
					return false
				}
			}
		default:
			return false
		}
		if i >= len(body) {
			return false
		}
		switch body[i] {
		case ',':
			i++
			continue
		case '}':
			if i != len(body)-1 {
				return false
			}
		default:
			return false
		}
		break
	}
	if plaintext {
		v.Plaintext = out.Plaintext
	}
	if ciphertext {
		v.Ciphertext = out.Ciphertext
	}
	if aadSet {
		v.AAD = out.AAD
	}
	return true
}

// plainString reads the string that starts at body[i] when it holds only
// printable ASCII other than the quote and the backslash, and returns it
// with the index after its closing quote.
func plainString(body []byte, i int) (string, int, bool) {
	if i >= len(body) || body[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(body); j++ {
		switch c := body[j]; {
		case c == '"':
			return string(body[i+1 : j]), j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", 0, false
		}
	}
	return "", 0, false
}

// writeAction writes the answer of a wrap, unwrap or rewrap as
// httpapi.WriteJSON would, byte for byte (a fuzz test compares them),
// without encoding/json's reflection; an answer with a string it cannot
// copy as it is (never base64 or a UUID) goes through httpapi.WriteJSON.
func writeAction(w http.ResponseWriter, out actionResponse) {
	// A reused buffer: Write copies the answer out (io.Writer never keeps
	// p). An unwrap's answer holds a DEK, so the buffer is wiped first.
	buf := answerBuffers.Get().(*[]byte)
	body, ok := out.appendJSON((*buf)[:0])
	defer func() {
		clear(body[:cap(body)])
		*buf = body[:0]
		answerBuffers.Put(buf)
	}()
	if !ok {
		httpapi.WriteJSON(w, http.StatusOK, out)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}

// answerBuffers holds writeAction's buffers. An answer is at most a few
// kilobytes (a DEK of at most 7,500 bytes, base64 encoded, and two versions).
var answerBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// appendJSON appends out and a newline as a json.Encoder that does not
// escape HTML writes them, and reports whether it could.
func (out *actionResponse) appendJSON(dst []byte) ([]byte, bool) {
	ok := true
	member := func(key string) {
		if dst[len(dst)-1] != '{' {
			dst = append(dst, ',')
		}
		dst = append(append(append(dst, '"'), key...), '"', ':')
	}
	str := func(s string) {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				ok = false
				return
			}
		}
		dst = append(append(append(dst, '"'), s...), '"')
	}
	version := func(key string, v *kms.KeyVersion) {
		if v == nil {
			return
		}
		member(key)
		dst = append(dst, '{')
		member("id")
		str(v.ID)
		if v.CreationDate != nil {
			t, err := v.CreationDate.MarshalJSON()
			if err != nil {
				ok = false
				return
			}
			member("creationDate")
			dst = append(dst, t...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, '{')
	if out.Plaintext != "" {
		member("plaintext")
		str(out.Plaintext)
	}
	if out.Ciphertext != "" {
		member("ciphertext")
		str(out.Ciphertext)
	}
	version("keyVersion", out.KeyVersion)
	version("rewrappedKeyVersion", out.RewrappedKeyVersion)
	return append(dst, '}', '\n'), ok
}
