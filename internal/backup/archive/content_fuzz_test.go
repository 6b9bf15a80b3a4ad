package archive

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// sealedRecords seals arbitrary record bytes as a backup's content, the
// way only a broken writer could: the reader's record parser and order
// checks are what stands behind authentication.
func sealedRecords(t *testing.T, key KeyWrapper, records []byte) []byte {
	var buf bytes.Buffer
	w, err := NewWriter(context.Background(), &buf, key, WriterOptions{BackupID: "fuzz", Created: time.Unix(1, 0), ChunkSize: minChunkSize, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.chunks.Write(records); err != nil {
		t.Fatal(err)
	}
	if err := w.chunks.close(""); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func validRecords() []byte {
	c := Contents{Meta: 1, Partitions: []PartitionRange{{Name: "p0", Start: 2, End: 6}, {Name: "p1", Start: 7, End: 7}}}
	b := appendContents(nil, c)
	b = append(b, byte(RecordMeta))
	b = appendString(b, "k")
	b = appendString(b, "value")
	b = appendRange(append(b, byte(RecordPartition)), c.Partitions[0])
	b = appendBatchHead(b, seglog.BatchMeta{BaseOffset: 0, Records: 4}, 3)
	b = append(b, "abc"...)
	b = appendBatchHead(b, seglog.BatchMeta{BaseOffset: 4, Records: 2}, 0)
	b = appendRange(append(b, byte(RecordPartition)), c.Partitions[1])
	return append(b, byte(recordEnd))
}

// FuzzReaderContent: whatever authenticated bytes hold, the reader ends
// with io.EOF or an errs value, and hands out only records in the order
// the contents promise.
func FuzzReaderContent(f *testing.F) {
	good := validRecords()
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(append(bytes.Clone(good), 'E'))
	f.Add([]byte{'C', 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{'C', 0, 1, 200, 1})
	f.Add([]byte{'B'})
	f.Add([]byte{})
	key, err := NewLocalRootKey("crn:v1:test", "v1", bytes.Repeat([]byte{1}, 32))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, records []byte) {
		r, err := NewReader(context.Background(), bytes.NewReader(sealedRecords(t, key, records)), key)
		if err != nil {
			if errs.As(err) == nil {
				t.Fatalf("NewReader error is not an errs value: %v", err)
			}
			return
		}
		defer r.Close()
		for {
			_, err := r.Next()
			if err == io.EOF {
				if !r.seq.ended {
					t.Fatal("io.EOF before the end record")
				}
				return
			}
			if err != nil {
				if errs.As(err) == nil {
					t.Fatalf("Next error is not an errs value: %v", err)
				}
				return
			}
		}
	})
}

func TestValidRecordsRead(t *testing.T) {
	key, _ := NewLocalRootKey("crn:v1:test", "v1", bytes.Repeat([]byte{1}, 32))
	r, err := NewReader(context.Background(), bytes.NewReader(sealedRecords(t, key, validRecords())), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var kinds []RecordKind
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, rec.Kind)
	}
	if string(kinds) != "KPBBP" {
		t.Fatalf("records %q, want KPBBP", kinds)
	}
}
