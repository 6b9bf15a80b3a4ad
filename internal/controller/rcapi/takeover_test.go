package rcapi

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// steppedWork is a task kind for tests that does ten numbered steps and
// records who did each, resuming from the task's recorded progress.
type steppedWork struct {
	mu   sync.Mutex
	done map[int][]string // step -> nodes that did it
}

func (w *steppedWork) step(node string, i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done[i] = append(w.done[i], node)
}

// run does the steps after the task's progress (10% a step).
func (w *steppedWork) run(ctx context.Context, node string, task *controller.Task, upTo int) error {
	for i := task.ProgressPercent/10 + 1; i <= upTo; i++ {
		w.step(node, i)
		if err := task.Progress(ctx, i*10); err != nil {
			return err
		}
	}
	if upTo == 10 {
		return task.Complete(ctx)
	}
	return nil
}

// clusterController is one node's controller on the shared database, with
// its heartbeats (stop them to play a kill -9).
func clusterController(t *testing.T, e *env, id string, work *steppedWork, kill *context.CancelFunc) *controller.Controller {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, t.TempDir(), e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log, err := audit.New(ctx, db, e.clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	*kill = cancel
	m, err := cluster.Join(hctx, db, id, "http://"+id, func() bool { return false }, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := controller.New(ctx, controller.Config{DB: db, Audit: log, Clock: e.clock, Authorizer: e.policies, Node: m})
	if err != nil {
		t.Fatal(err)
	}
	ctl.Tasks().OnTakeover("instance", "Stepped work", func(ctx context.Context, task *controller.Task) {
		go func() {
			if err := work.run(ctx, id, task, 10); err != nil {
				t.Errorf("%s resuming the task: %v", id, err)
			}
		}()
	})
	return ctl
}

// TestTaskOfAKilledNodeResumesOnAnother: node A runs a task halfway and is
// killed (its heartbeats stop); node B does not touch the task while A is
// live, takes it over once A's heartbeats have lapsed, and resumes it from
// its recorded progress: every step is done exactly once and A, were it
// only paused, can no longer write the task. A task kind nothing resumes
// is failed instead.
func TestTaskOfAKilledNodeResumesOnAnother(t *testing.T) {
	e := newEnv(t)
	if e.dbURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: two nodes need PostgreSQL")
	}
	ctx := context.Background()
	inst := e.instance(e.createInstance("es", esPlan, nil).str("guid"))
	work := &steppedWork{done: map[int][]string{}}
	var killA, killB context.CancelFunc
	a := clusterController(t, e, "node-a", work, &killA)
	b := clusterController(t, e, "node-b", work, &killB)

	task, err := a.Tasks().Start(ctx, inst, "instance", "Stepped work")
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Tasks().Start(ctx, inst, "instance", "Work nothing resumes")
	if err != nil {
		t.Fatal(err)
	}
	if err := work.run(ctx, "node-a", task, 4); err != nil {
		t.Fatal(err)
	}
	// Node B, starting or holding the schedulers, leaves a live node's
	// tasks alone.
	if err := b.TakeOverStopped(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Tasks().Get(ctx, task.ID); got.Status != controller.TaskRunning || got.ProgressPercent != 40 {
		t.Fatalf("a live node's task after another node's takeover round: %+v", got)
	}
	if err := task.Progress(ctx, 40); err != nil {
		t.Fatalf("node A lost its live task: %v", err)
	}

	killA()
	killed := time.Now()
	deadline := killed.Add(cluster.LiveWithin + 20*time.Second)
	for {
		if err := b.TakeOverStopped(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := b.Tasks().Get(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == controller.TaskCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task was not finished by node B: %+v", got)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("finished on node B %v after node A stopped", time.Since(killed).Round(time.Millisecond))
	work.mu.Lock()
	for i := 1; i <= 10; i++ {
		want := "node-a"
		if i > 4 {
			want = "node-b"
		}
		if got := fmt.Sprint(work.done[i]); got != "["+want+"]" {
			t.Errorf("step %d done by %s, want once by %s", i, got, want)
		}
	}
	work.mu.Unlock()
	if err := task.Progress(ctx, 50); errs.KindOf(err) != errs.Conflict {
		t.Errorf("node A writing the task it lost: %v", err)
	}
	got, err := b.Tasks().Get(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != controller.TaskFailed || got.Reason != "Interrupted by a restart" {
		t.Errorf("a task no one resumes: %+v", got)
	}
}
