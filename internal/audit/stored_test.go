package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzStoredBodyEncodesAsEncodingJSON checks the hand-written encoder of
// stored bodies against encoding/json, byte for byte: strings with quotes,
// control characters, HTML characters, invalid UTF-8 and U+2028, maps with
// string and other values, nil and empty pointers.
func FuzzStoredBodyEncodesAsEncodingJSON(f *testing.F) {
	f.Add("admin", "127.0.0.1", "Go-http-client/1.1", "instanceID", "b3c1d2e3-0000-4000-8000-00000000beef", 200, true, uint8(0))
	f.Add("", "", "", "", "", 0, false, uint8(255))
	f.Add("a\"b\\c", "<script>&", "\x00\x1f\x7f", "k\u2028", "\xff\xfe", -1, false, uint8(7))
	f.Add("é日本", "\t\n\r\b\f", "\u2029", "z", "a", 1<<31-1, true, uint8(0x55))
	f.Fuzz(func(t *testing.T, s1, s2, s3, k, v string, code int, flag bool, mask uint8) {
		pick := func(bit uint8, s string) *string {
			if mask&bit == 0 {
				return nil
			}
			return &s
		}
		b := storedBody{EventTime: s1, Message: pick(1, s2), InitiatorName: s3, InitiatorType: s1, Credential: s2, HostAddress: s3,
			HostAddressType: pick(2, s1), HostAgent: s2, AuthnID: pick(4, s3), AuthnName: pick(8, ""), TargetName: k, TargetType: v,
			Observer: pick(16, v), ReasonCode: code, ReasonType: pick(32, k), ReasonForFailure: s1, DataEvent: flag, LogSourceCRN: s2,
			NoServiceCopy: !flag}
		if mask&64 != 0 {
			b.RequestData = map[string]any{k: v, s1: s2, "method": "POST", "n": code, "ok": flag, "list": []string{s3}}
		}
		if mask&128 != 0 {
			b.ResponseData = map[string]any{}
			if flag {
				b.ResponseData[v] = k
			}
		}
		want, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendJSON:\n%s\nencoding/json:\n%s", got, want)
		}
	})
}

// TestWrapEventBodyEncodesAsEncodingJSON is the body of a real wrap event,
// the one every wrap stores.
func TestWrapEventBodyEncodesAsEncodingJSON(t *testing.T) {
	ev := wrapEvent(benchContext())
	ev.ResponseData["size"] = 32 // a value encoding/json writes
	b := bodyOf(ev, "")
	want, _ := json.Marshal(b)
	got, err := encodeBody(ev, "")
	if err != nil || got != string(want) {
		t.Fatalf("encodeBody = %s, %v; encoding/json: %s", got, err, want)
	}
}

// TestStoredBodyEncoderWritesEveryField sets every field of storedBody,
// whatever fields it has, so that one added to the struct but not to
// appendJSON fails here.
func TestStoredBodyEncoderWritesEveryField(t *testing.T) {
	var b storedBody
	v := reflect.ValueOf(&b).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Pointer:
			s := "x"
			f.Set(reflect.ValueOf(&s))
		case reflect.Int:
			f.SetInt(1)
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Map:
			f.Set(reflect.ValueOf(map[string]any{"k": "v"}))
		default:
			t.Fatalf("storedBody.%s: a %s, which this test cannot set", v.Type().Field(i).Name, f.Kind())
		}
	}
	want, _ := json.Marshal(b)
	got, err := b.appendJSON(nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("appendJSON = %s, %v; encoding/json: %s", got, err, want)
	}
}

// TestResetAddsTheRequestToTheCallersData: the caller's request data
// becomes the event's, with the request's URI and method added, and a key
// the caller set itself is kept (as when NewEvent's map was copied over).
func TestResetAddsTheRequestToTheCallersData(t *testing.T) {
	ctx := benchContext()
	data := map[string]any{"instanceID": "b3c1d2e3", "method": "caller's"}
	ev := &Event{ID: "left from an earlier use"}
	ev.Reset(ctx, "kms.secrets.wrap", Target{ID: "crn:v1:bluemix:public:kms:us-south:a/" + acct + ":b3c1d2e3:key:k"}, Success, 200, data)
	if ev.ID != "" || ev.Initiator.ID != "IBMid-915C6337C8BA" || ev.Severity != Normal {
		t.Fatalf("reset event %+v", ev)
	}
	want := map[string]any{"instanceID": "b3c1d2e3", "method": "caller's", "requestURI": "/api/v2/keys/66c6b928-16a7-4477-9bba-17d956403772/actions/wrap"}
	if len(ev.RequestData) != len(want) {
		t.Fatalf("request data %v, want %v", ev.RequestData, want)
	}
	for k, v := range want {
		if ev.RequestData[k] != v {
			t.Fatalf("request data %v, want %v", ev.RequestData, want)
		}
	}
	if ev := NewEvent(ctx, "kms.secrets.wrap", Target{}, Success, 200); ev.RequestData["method"] != "POST" {
		t.Fatalf("request data of a new map: %v", ev.RequestData)
	}
}
