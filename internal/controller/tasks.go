package controller

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Task statuses, as the Cloud Databases tasks API names them.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskCompleted = "completed"
	TaskFailed    = "failed"
)

// How long finished tasks stay listed ("recently run"): Cloud Databases keeps
// successful tasks 24 to 48 hours and failed ones 7 to 8 days.
const (
	completedTaskRetention = 48 * time.Hour
	failedTaskRetention    = 8 * 24 * time.Hour
)

// Tasks records long operations on instances (a backup, "Syncing KMS
// state") so that users can follow them. A task is durable: every change is
// written before the call returns. A task belongs to the process that runs
// it; when that process stops, RunTakeovers (on the node holding the
// schedulers' lease) hands its running tasks to the Takeover registered for
// their kind, on this node, or marks them failed ("Interrupted by a
// restart") when none is.
type Tasks struct {
	c *Controller

	mu        sync.Mutex
	takeovers map[string]Takeover // by resource type and description
}

// Takeover carries on a task whose process stopped: it is given the task as
// recorded (its progress), now owned by this process, and runs it to its
// end (Complete or Fail). It must not block: it starts the work and returns.
type Takeover func(ctx context.Context, task *Task)

// OnTakeover registers how tasks of one kind (resource type and
// description, as Start was given them) carry on on another node.
func (t *Tasks) OnTakeover(resourceType, description string, fn Takeover) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.takeovers[resourceType+"\x00"+description] = fn
}

func (t *Tasks) takeover(resourceType, description string) Takeover {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.takeovers[resourceType+"\x00"+description]
}

// Task is one long operation on an instance.
type Task struct {
	ID              string  // a UUID
	CRN             crn.CRN // <instance CRN with task:<id>>
	InstanceGUID    string
	DeploymentCRN   crn.CRN
	ResourceType    string // backup, configuration, instance, ...
	Description     string
	Status          string
	ProgressPercent int
	Reason          string // why it failed
	CreatedAt       time.Time
	UpdatedAt       time.Time

	tasks *Tasks
	owner string // the process running it (Node.Owner)
}

// Start records a new running task on inst.
func (t *Tasks) Start(ctx context.Context, inst Instance, resourceType, description string) (*Task, error) {
	const op = "controller.Tasks.Start"
	if resourceType == "" || description == "" {
		return nil, errs.E(op, errs.Invalid, "BAD_TASK", "a task needs a resource type and a description")
	}
	id := uuid.NewString()
	now := t.c.now()
	task := &Task{ID: id, CRN: inst.CRN.Child("task", id), InstanceGUID: inst.GUID, DeploymentCRN: inst.CRN,
		ResourceType: resourceType, Description: description, Status: TaskRunning, CreatedAt: now, UpdatedAt: now, tasks: t, owner: t.c.node.Owner()}
	err := t.c.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO rc_tasks (id, crn, instance_guid, resource_type, description, status, progress_percent, created_at, updated_at, owner)
			VALUES (?,?,?,?,?,?,?,?,?,?)`, id, task.CRN.String(), inst.GUID, resourceType, description, task.Status, 0, ts(now), ts(now), task.owner)
		return err
	})
	if err != nil {
		return nil, err
	}
	return task, nil
}

// Progress records how far the task has come (0 to 100).
func (task *Task) Progress(ctx context.Context, percent int) error {
	if percent < 0 || percent > 100 {
		return errs.E("controller.Task.Progress", errs.Invalid, "BAD_TASK", "progress is a percentage from 0 to 100")
	}
	return task.set(ctx, TaskRunning, percent, "")
}

// Complete marks the task completed.
func (task *Task) Complete(ctx context.Context) error { return task.set(ctx, TaskCompleted, 100, "") }

// Fail marks the task failed, with a reason the user may read.
func (task *Task) Fail(ctx context.Context, reason string) error {
	return task.set(ctx, TaskFailed, task.ProgressPercent, reason)
}

func (task *Task) set(ctx context.Context, status string, percent int, reason string) error {
	const op = "controller.Task"
	now := task.tasks.c.now()
	err := task.tasks.c.db.Tx(ctx, func(tx *store.Tx) error {
		// Only the task's owner writes it: a process that was taken for
		// stopped and whose task another node took over is refused.
		res, err := tx.Exec(`UPDATE rc_tasks SET status = ?, progress_percent = ?, reason = ?, updated_at = ? WHERE id = ? AND status IN (?, ?) AND owner = ?`,
			status, percent, reason, ts(now), task.ID, TaskQueued, TaskRunning, task.owner)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errs.Ef(op, errs.Conflict, "TASK_FINISHED", "The task has already finished, was interrupted or runs on another node")
		}
		return nil
	})
	if err != nil {
		return err
	}
	task.Status, task.ProgressPercent, task.Reason, task.UpdatedAt = status, percent, reason, now
	return nil
}

// List returns the instance's running and recently run tasks, newest first.
func (t *Tasks) List(ctx context.Context, instanceGUID string) ([]Task, error) {
	now := t.c.now()
	var out []Task
	err := t.c.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+taskColumns+` FROM rc_tasks WHERE instance_guid = ?
			AND (status IN (?, ?) OR (status = ? AND updated_at > ?) OR (status = ? AND updated_at > ?))
			ORDER BY created_at DESC, id`, instanceGUID, TaskQueued, TaskRunning,
			TaskCompleted, ts(now.Add(-completedTaskRetention)), TaskFailed, ts(now.Add(-failedTaskRetention)))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			task, err := t.scan(rows)
			if err != nil {
				return err
			}
			out = append(out, *task)
		}
		return rows.Err()
	})
	if out == nil {
		out = []Task{}
	}
	return out, err
}

// Get returns a task by its id or CRN.
func (t *Tasks) Get(ctx context.Context, id string) (*Task, error) {
	const op = "controller.Tasks.Get"
	col := "id"
	if strings.HasPrefix(id, "crn:") {
		col = "crn"
	}
	var task *Task
	err := t.c.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		task, err = t.scan(tx.QueryRow(`SELECT `+taskColumns+` FROM rc_tasks WHERE `+col+` = ?`, id))
		if store.IsNoRows(err) {
			return errNoTask(op)
		}
		return err
	})
	return task, err
}

func errNoTask(op string) error {
	return errs.E(op, errs.NotExist, "TASK_NOT_FOUND", "The task could not be found")
}

// ListTasks lists a deployment's tasks for a caller who may read it.
func (c *Controller) ListTasks(ctx context.Context, instanceID string) ([]Task, error) {
	inst, err := c.GetInstance(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	return c.tasks.List(ctx, inst.GUID)
}

// GetTask returns a task for a caller who may read its deployment.
func (c *Controller) GetTask(ctx context.Context, id string) (*Task, error) {
	const op = "controller.GetTask"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	task, err := c.tasks.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	inst, err := c.loadInstance(ctx, op, task.InstanceGUID)
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, op, p, auth.InstanceRead, inst); err != nil {
		if errs.Is(errs.NotExist, err) {
			return nil, errNoTask(op)
		}
		return nil, err
	}
	return task, nil
}

const taskColumns = `id, crn, instance_guid, resource_type, description, status, progress_percent, reason, created_at, updated_at, owner`

func (t *Tasks) scan(row scanner) (*Task, error) {
	task := Task{tasks: t}
	var crnStr, created, updated string
	if err := row.Scan(&task.ID, &crnStr, &task.InstanceGUID, &task.ResourceType, &task.Description, &task.Status,
		&task.ProgressPercent, &task.Reason, &created, &updated, &task.owner); err != nil {
		return nil, err
	}
	var err error
	if task.CRN, err = crn.Parse(crnStr); err != nil {
		return nil, errs.Internalf("controller.Tasks", err)
	}
	task.DeploymentCRN = task.CRN.Instance()
	task.CreatedAt, task.UpdatedAt = parseTS(created), parseTS(updated)
	return &task, nil
}
