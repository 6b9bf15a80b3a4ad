// Package volumetest holds what the tests of every backup volume share: one
// behaviour suite that each backend must pass, and a real S3 server
// (versitygw) started for the test.
package volumetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/errs"
)

// Conformance runs the behaviour every Volume must have. newVolume returns
// an empty volume.
func Conformance(t *testing.T, newVolume func(t *testing.T) volume.Volume) {
	ctx := context.Background()
	t.Run("RoundTripLargeObject", func(t *testing.T) {
		v := newVolume(t)
		data := randomBytes(t, 13<<20+12345) // several multipart parts
		Put(t, v, "backups/one.kbk", data)
		if got := Get(t, v, "backups/one.kbk"); !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, they differ from the %d written", len(got), len(data))
		}
		info, err := v.Stat(ctx, "backups/one.kbk")
		if err != nil || info.Size != int64(len(data)) || info.Name != "backups/one.kbk" || info.Modified.IsZero() {
			t.Fatalf("Stat = %+v, %v", info, err)
		}
	})
	t.Run("ObjectInvisibleUntilClose", func(t *testing.T) {
		v := newVolume(t)
		w, err := v.Create(ctx, "pending")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(randomBytes(t, 1<<20)); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Stat(ctx, "pending"); errs.KindOf(err) != errs.NotExist {
			t.Fatalf("Stat of an unclosed object = %v, want NotExist", err)
		}
		if l := list(t, v, ""); len(l) != 0 {
			t.Fatalf("List shows an unclosed object: %+v", l)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if l := list(t, v, ""); len(l) != 1 || l[0].Name != "pending" {
			t.Fatalf("List after Close = %+v", l)
		}
	})
	t.Run("AbandonedWriteKeepsOlderObject", func(t *testing.T) {
		for _, how := range []string{"abort", "cancel"} {
			t.Run(how, func(t *testing.T) {
				v := newVolume(t)
				old := []byte("the older backup")
				Put(t, v, "b", old)
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				w, err := v.Create(cctx, "b")
				if err != nil {
					t.Fatal(err)
				}
				w.Write(randomBytes(t, 6<<20))
				switch how {
				case "abort":
					volume.Abort(w)
					if err := w.Close(); err == nil {
						t.Fatal("Close after Abort succeeded")
					}
				case "cancel":
					cancel()
					if err := w.Close(); err == nil {
						t.Fatal("Close after cancel succeeded")
					}
				}
				if got := Get(t, v, "b"); !bytes.Equal(got, old) {
					t.Fatalf("the older object changed to %d bytes", len(got))
				}
				if l := list(t, v, ""); len(l) != 1 {
					t.Fatalf("List = %+v, want only the older object", l)
				}
			})
		}
	})
	t.Run("CreateReplacesObject", func(t *testing.T) {
		v := newVolume(t)
		Put(t, v, "x", []byte("first"))
		Put(t, v, "x", []byte("second, longer"))
		if got := Get(t, v, "x"); string(got) != "second, longer" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("ListFiltersByPrefixInNameOrder", func(t *testing.T) {
		v := newVolume(t)
		for _, n := range []string{"b/2", "a/1", "b/1", "b10", "c"} {
			Put(t, v, n, []byte(n))
		}
		for _, c := range []struct {
			prefix string
			want   []string
		}{
			{"", []string{"a/1", "b/1", "b/2", "b10", "c"}},
			{"b", []string{"b/1", "b/2", "b10"}},
			{"b/", []string{"b/1", "b/2"}},
			{"b/1", []string{"b/1"}},
			{"d", nil},
		} {
			var got []string
			for _, i := range list(t, v, c.prefix) {
				if i.Size != int64(len(i.Name)) {
					t.Errorf("List(%q): %s has size %d", c.prefix, i.Name, i.Size)
				}
				got = append(got, i.Name)
			}
			if !equal(got, c.want) {
				t.Errorf("List(%q) = %v, want %v", c.prefix, got, c.want)
			}
		}
	})
	t.Run("DeleteRemovesAndIsIdempotent", func(t *testing.T) {
		v := newVolume(t)
		Put(t, v, "gone", []byte("x"))
		for range 2 {
			if err := v.Delete(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := v.Stat(ctx, "gone"); errs.KindOf(err) != errs.NotExist {
			t.Fatalf("Stat after Delete = %v", err)
		}
		if _, err := v.Open(ctx, "gone"); errs.KindOf(err) != errs.NotExist {
			t.Fatalf("Open after Delete = %v", err)
		}
	})
	t.Run("BadNamesRefused", func(t *testing.T) {
		v := newVolume(t)
		for _, name := range []string{"", "/abs", "a//b", "../up", "a/../b", ".tmp-x", "a/.hidden", "sp ace", "a/", string(make([]byte, 600))} {
			if _, err := v.Create(ctx, name); errs.KindOf(err) != errs.Invalid {
				t.Errorf("Create(%q) = %v, want Invalid", name, err)
			}
			if _, err := v.Open(ctx, name); errs.KindOf(err) != errs.Invalid {
				t.Errorf("Open(%q) = %v, want Invalid", name, err)
			}
			if err := v.Delete(ctx, name); errs.KindOf(err) != errs.Invalid {
				t.Errorf("Delete(%q) = %v, want Invalid", name, err)
			}
		}
		if _, err := v.List(ctx, "../"); errs.KindOf(err) != errs.Invalid {
			t.Errorf("List(../) = %v, want Invalid", err)
		}
	})
}

// Put writes an object in odd-sized pieces, as a streaming writer does.
func Put(t *testing.T, v volume.Volume, name string, data []byte) {
	t.Helper()
	w, err := v.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) > 0 {
		n := min(len(data), 777777)
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// Get reads an object whole.
func Get(t *testing.T, v volume.Volume, name string) []byte {
	t.Helper()
	r, err := v.Open(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func list(t *testing.T, v volume.Volume, prefix string) []volume.Info {
	t.Helper()
	l, err := v.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
