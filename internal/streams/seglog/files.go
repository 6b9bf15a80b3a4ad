package seglog

import (
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/keyline/keyline/internal/durable"
)

// writeFileAtomic replaces path with data: a crash leaves either the old
// file or the new one, both complete.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + rewriteExt
	if err := writeSynced(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return durable.SyncClose(f)
}

// startWriteback is durable.StartWriteback, under a name that Append's
// durable result does not hide.
var startWriteback = durable.StartWriteback

// pageSize is the unit of writeback: only pages that no later write
// touches are handed to the disk early.
const pageSize = 4096

// blockWriter writes one block at off as sealEmit hands it out, piece by
// piece. With kick, the pages each piece completes (from the one it began
// in, which the piece before left unfinished) go to the disk at once,
// which then writes them while the next piece is sealed, so that the fsync
// after the block finds little left to flush. The block's last piece is
// left to that fsync.
type blockWriter struct {
	f     *os.File
	off   int64
	total int // the block's length
	kick  bool
	sent  int // bytes written so far
}

func (w *blockWriter) emit(b []byte) error {
	at := w.off + int64(w.sent)
	if _, err := w.f.WriteAt(b[w.sent:], at); err != nil {
		return err
	}
	w.sent = len(b)
	if w.kick && w.sent < w.total {
		from, to := at&^(pageSize-1), (w.off+int64(w.sent))&^(pageSize-1)
		startWriteback(w.f, from, to-from)
	}
	return nil
}

// readAll reads the first size bytes of f.
func readAll(f *os.File, size int64) ([]byte, error) {
	b := make([]byte, size)
	_, err := f.ReadAt(b, 0)
	return b, err
}

// groupCommit lets concurrent writers share fsyncs: a writer adds its file
// to the pending set and waits; one waiter at a time leads, syncing every
// file pending when it starts, while later writers gather for the next
// round. An fsync failure is sticky: after it the kernel may have dropped
// dirty pages, so nothing written since can be promised durable.
type groupCommit struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending map[*os.File]struct{}
	next    uint64 // the round new waiters join; next-1 rounds have started
	done    uint64 // the last finished round
	busy    bool
	waiting int // writers inside wait, for tests
	err     error
	sync    func(*os.File) error
}

func newGroupCommit() *groupCommit {
	g := &groupCommit{pending: map[*os.File]struct{}{}, next: 1, sync: (*os.File).Sync}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *groupCommit) wait(f *os.File) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	g.pending[f] = struct{}{}
	round := g.next
	g.waiting++
	defer func() { g.waiting-- }()
	for g.done < round {
		if g.busy {
			g.cond.Wait()
			continue
		}
		g.busy = true
		files := g.pending
		g.pending = map[*os.File]struct{}{}
		leading := g.next
		g.next++
		g.mu.Unlock()
		err := g.syncAll(files)
		g.mu.Lock()
		if err != nil && g.err == nil {
			g.err = err
		}
		g.done = leading
		g.busy = false
		g.cond.Broadcast()
	}
	return g.err
}

// syncFanout bounds the fsyncs of one round that run at once. Concurrent
// fsyncs let the file system fold them into one journal commit, where
// fsyncs in turn would each wait for their own.
const syncFanout = 16

func (g *groupCommit) syncAll(files map[*os.File]struct{}) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, syncFanout)
	)
	for f := range files {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			// A file closed meanwhile was synced by whoever closed it.
			if err := g.sync(f); err != nil && !errors.Is(err, os.ErrClosed) {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// failed is the sticky fsync error, if any.
func (g *groupCommit) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
