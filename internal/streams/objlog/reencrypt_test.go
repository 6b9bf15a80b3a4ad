package objlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

var (
	oldDEK = testDEK("dek-1", 7)
	newDEK = testDEK("dek-2", 9)
)

// reencFixture is a store with data under oldDEK: batches in many small
// objects over two partitions, and metadata.
type reencFixture struct {
	e    *env
	want map[string]map[int64][]byte
	meta map[string][]byte
	mu   sync.Mutex
}

func newReencFixture(t *testing.T, objects int) (*reencFixture, *objlog.Store) {
	t.Helper()
	f := &reencFixture{e: newEnv(t), want: map[string]map[int64][]byte{}, meta: map[string][]byte{}}
	st := f.open(t, oldDEK)
	for i := range objects {
		f.append(t, st, fmt.Sprintf("topicid7-%d", i%2), fmt.Appendf(nil, "before %d %s", i, bytes.Repeat([]byte{'r'}, 200+i)))
	}
	for i := range 20 {
		name := fmt.Sprintf("group/billing-%d", i)
		f.meta[name] = fmt.Appendf(nil, "offsets of %d", i)
		if err := st.PutMeta(name, f.meta[name]); err != nil {
			t.Fatal(err)
		}
	}
	return f, st
}

func (f *reencFixture) open(t *testing.T, keys ...*seglog.DEK) *objlog.Store {
	t.Helper()
	st, err := objlog.Open(context.Background(), f.e.db, f.e.bucket, objlog.Options{StoreID: "dep1", Keys: keys,
		CompactEvery: -1, RequestTimeout: time.Second, FlushWindow: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// append appends one batch, durably (one object per call).
func (f *reencFixture) append(t *testing.T, st *objlog.Store, part string, data []byte) {
	p, err := st.Partition(part, true)
	if err == nil {
		var base int64
		var durable func() error
		base, durable, err = p.AppendAsync(context.Background(), batchMeta(2, 1000, 5, 0), data)
		if err == nil {
			err = durable()
		}
		if err == nil {
			f.mu.Lock()
			if f.want[part] == nil {
				f.want[part] = map[int64][]byte{}
			}
			f.want[part][base] = data
			f.mu.Unlock()
		}
	}
	if err != nil {
		t.Error(err)
	}
}

// check reads every batch and metadata pair back from st.
func (f *reencFixture) check(t *testing.T, st *objlog.Store) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for part, want := range f.want {
		p, err := st.Partition(part, false)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, p)
		if len(got) != len(want) {
			t.Fatalf("%s: %d batches, want %d", part, len(got), len(want))
		}
		for base, data := range want {
			if !bytes.Equal(got[base], data) {
				t.Fatalf("%s: batch %d reads %q, want %q", part, base, got[base], data)
			}
		}
	}
	for k, v := range f.meta {
		if got, ok := st.GetMeta(k); !ok || !bytes.Equal(got, v) {
			t.Fatalf("metadata %s = %q, %v; want %q", k, got, ok, v)
		}
	}
	if n := len(st.ListMeta("group/")); n != len(f.meta) {
		t.Fatalf("%d metadata pairs, want %d", n, len(f.meta))
	}
}

// sealedUnder counts what a key sealed that is left outside the process:
// chunks in the bucket's files (each sealed value starts with its key's
// ID, length first), and the store's rows in the database.
func (f *reencFixture) sealedUnder(t *testing.T, id string) (objects, rows int) {
	t.Helper()
	mark := append([]byte{byte(len(id))}, id...)
	dir := filepath.Join(f.e.s3.DataDir, testBucket, objlog.ObjectPrefix("dep1"))
	for _, name := range f.e.objects(t) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, mark) {
			objects++
		}
	}
	err := f.e.db.Read(context.Background(), func(tx *store.Tx) error {
		for _, q := range []string{
			`SELECT sealed FROM objlog_meta WHERE store = 'dep1'`,
			`SELECT verifier FROM objlog_stores WHERE store = 'dep1'`,
			`SELECT verifier FROM objlog_keys WHERE store = 'dep1'`,
			`SELECT dek_id FROM objlog_objects WHERE store = 'dep1'`,
		} {
			rs, err := tx.Query(q)
			if err != nil {
				return err
			}
			for rs.Next() {
				var b []byte
				if err := rs.Scan(&b); err != nil {
					rs.Close()
					return err
				}
				if bytes.HasPrefix(b, mark) || string(b) == id {
					rows++
				}
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objects, rows
}

// checkOnlyNewKey checks that nothing is left under the old DEK and that
// the store opens with the new DEK alone, and not with the old one.
func (f *reencFixture) checkOnlyNewKey(t *testing.T, st *objlog.Store) {
	t.Helper()
	if ids := st.KeyIDsInUse(); !slices.Equal(ids, []string{newDEK.ID}) {
		t.Fatalf("KeyIDsInUse = %v after re-encryption, want [%s]", ids, newDEK.ID)
	}
	if objs, rows := f.sealedUnder(t, oldDEK.ID); objs != 0 || rows != 0 {
		t.Fatalf("%d objects and %d rows still sealed under the old DEK", objs, rows)
	}
	if objs, _ := f.sealedUnder(t, newDEK.ID); objs == 0 {
		t.Fatal("no object under the new DEK")
	}
	st.Close()
	if _, err := objlog.Open(context.Background(), f.e.db, f.e.bucket, objlog.Options{StoreID: "dep1", Keys: []*seglog.DEK{oldDEK}}); errs.As(err) == nil || errs.As(err).Code != objlog.CodeKeyMismatch {
		t.Fatalf("open with the old DEK alone = %v, want %s", err, objlog.CodeKeyMismatch)
	}
	f.check(t, f.open(t, newDEK))
}

func TestReencryptionRewritesEverythingUnderTheNewKeyWhileAppendsGoOn(t *testing.T) {
	f, st := newReencFixture(t, 40)
	if ids := st.KeyIDsInUse(); !slices.Equal(ids, []string{oldDEK.ID}) {
		t.Fatalf("KeyIDsInUse = %v, want [%s]", ids, oldDEK.ID)
	}
	defer objlog.SetReencGroupBytes(2 << 10)() // several rewrites
	// Appends (and metadata writes) go on during the re-encryption.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f.append(t, st, fmt.Sprintf("topicid7-%d", i%2), fmt.Appendf(nil, "during %d", i))
			name := fmt.Sprintf("group/during-%d", i%5)
			v := fmt.Appendf(nil, "during %d", i)
			if err := st.PutMeta(name, v); err != nil {
				t.Error(err)
				return
			}
			f.mu.Lock()
			f.meta[name] = v
			f.mu.Unlock()
		}
	})
	var calls [][2]int64
	err := st.ReencryptTo(context.Background(), newDEK, func(done, total int64) { calls = append(calls, [2]int64{done, total}) })
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 {
		t.Fatalf("progress told %v, want several steps", calls)
	}
	for i, c := range calls {
		if c[1] <= 0 || c[0] > c[1] || i > 0 && c[0] < calls[i-1][0] {
			t.Fatalf("progress %v is not done/total going up", calls)
		}
	}
	if last := calls[len(calls)-1]; last[0] != last[1] {
		t.Fatalf("progress ended at %v", last)
	}
	f.append(t, st, "topicid7-0", []byte("after"))
	f.check(t, st)
	f.checkOnlyNewKey(t, st)
}

func TestAnInterruptedReencryptionResumesAfterAReopen(t *testing.T) {
	f, st := newReencFixture(t, 24)
	defer objlog.SetReencGroupBytes(1)() // one object per rewrite

	// Canceled after a few objects: every row stays readable.
	ctx, cancel := context.WithCancel(context.Background())
	var firstTotal int64
	err := st.ReencryptTo(ctx, newDEK, func(done, total int64) {
		firstTotal = total
		if done > total/4 {
			cancel()
		}
	})
	if errs.KindOf(err) != errs.Unavailable {
		t.Fatalf("canceled re-encryption = %v, want Unavailable", err)
	}
	f.check(t, st)
	if ids := st.KeyIDsInUse(); !slices.Equal(ids, []string{oldDEK.ID, newDEK.ID}) {
		t.Fatalf("KeyIDsInUse = %v mid-way, want both", ids)
	}
	// Then killed between an upload and its commit: nothing is committed
	// for that object, and the process stops without cleaning up.
	uploads := 0
	undo := objlog.SetRewriteHook(func(stage string) error {
		if uploads++; uploads == 3 {
			return errors.New("killed")
		}
		return nil
	})
	err = st.ReencryptTo(context.Background(), newDEK, nil)
	undo()
	if err == nil {
		t.Fatal("the killed re-encryption succeeded")
	}
	st.Close()
	objs, _ := f.sealedUnder(t, oldDEK.ID)
	if objs == 0 {
		t.Fatal("nothing left to resume")
	}

	// Another process opens the store with both keys and resumes, its
	// progress counted from the first start.
	st = f.open(t, newDEK, oldDEK)
	f.check(t, st)
	var calls [][2]int64
	if err := st.ReencryptTo(context.Background(), newDEK, func(done, total int64) { calls = append(calls, [2]int64{done, total}) }); err != nil {
		t.Fatal(err)
	}
	if len(calls) == 0 || calls[0][1] != firstTotal || calls[0][0] <= firstTotal/4 {
		t.Fatalf("resumed progress %v, want to go on from past a quarter of %d", calls, firstTotal)
	}
	f.check(t, st)
	f.checkOnlyNewKey(t, st)
}

// TestReencryptionWaitsForAFlushSealedUnderTheOldKey: a flush sealed
// under the old key before the switch, still uploading, is committed and
// then rewritten before the re-encryption ends, not recorded afterwards
// under a key about to be deleted.
func TestReencryptionWaitsForAFlushSealedUnderTheOldKey(t *testing.T) {
	f, st := newReencFixture(t, 0)
	p, err := st.Partition("topicid7-0", true)
	if err != nil {
		t.Fatal(err)
	}
	f.e.proxy.cut()
	data := []byte("in flight during the switch")
	base, durable, err := p.AppendAsync(context.Background(), batchMeta(1, 1000, 5, 0), data)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the flush is cut; its upload retries
	go func() {
		time.Sleep(time.Second)
		f.e.proxy.restore()
	}()
	if err := st.ReencryptTo(context.Background(), newDEK, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for err = durable(); err != nil; err = durable() {
		if time.Now().After(deadline) {
			t.Fatalf("the append is not stored: %v", err)
		}
	}
	f.want["topicid7-0"] = map[int64][]byte{base: data}
	f.check(t, st)
	f.checkOnlyNewKey(t, st)
}

func TestReencryptionRefusesAKeyThatDoesNotMatchItsID(t *testing.T) {
	f, st := newReencFixture(t, 2)
	if err := st.ReencryptTo(context.Background(), newDEK, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.ReencryptTo(context.Background(), testDEK(newDEK.ID, 1), nil); errs.As(err) == nil || errs.As(err).Code != objlog.CodeKeyMismatch {
		t.Fatalf("re-encryption to another key under a known ID = %v, want %s", err, objlog.CodeKeyMismatch)
	}
	f.check(t, st)
}

// BenchmarkReencryption measures the rate at which a re-encryption
// rewrites objects (GET, open, seal, PUT, commit), in MB/s of objects,
// up to the moment every row names the new DEK (the old objects' deletion
// a request timeout later is left out).
func BenchmarkReencryption(b *testing.B) {
	const objects, objectBytes = 32, 1 << 20
	srv := volumetest.StartS3(b)
	bucket, err := objlog.NewBucket(objlog.BucketConfig{Endpoint: srv.Endpoint, Bucket: testBucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		b.Fatal(err)
	}
	if err := bucket.EnsureBucket(context.Background()); err != nil {
		b.Fatal(err)
	}
	db := storetest.Open(b)
	keys := []*seglog.DEK{oldDEK}
	st, err := objlog.Open(context.Background(), db, bucket, objlog.Options{StoreID: "dep1", Keys: keys, CompactEvery: -1, FlushWindow: time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	p, err := st.Partition("topicid9-0", true)
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), objectBytes/16)
	for i := range objects {
		_, durable, err := p.AppendAsync(context.Background(), batchMeta(1, int64(i), -1, -1), data)
		if err == nil {
			err = durable()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	var rewritten time.Duration
	var bytesDone int64
	b.ResetTimer()
	for i := range b.N {
		next := testDEK(fmt.Sprintf("bench-%d", i), byte(i))
		start, counted := time.Now(), false
		err := st.ReencryptTo(context.Background(), next, func(done, total int64) {
			if done == total && total > 0 && !counted {
				counted = true
				rewritten += time.Since(start)
				bytesDone += total
			}
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	st.Close()
	if rewritten > 0 {
		b.ReportMetric(float64(bytesDone)/1e6/rewritten.Seconds(), "MB/s")
	}
}
