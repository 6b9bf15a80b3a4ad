package controller

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/store"
)

// TakeoverInterval is how often RunTakeovers looks for the work of stopped
// processes. A process counts as stopped once its node's heartbeats stop
// (cluster.LiveWithin) or the node restarts.
const TakeoverInterval = 2 * time.Second

// RunTakeovers takes over, until ctx ends, the provisions and tasks whose
// process stopped. One node runs it (under the schedulers' lease); each
// takeover is one transaction that moves the work to this process only if
// its owner is still the stopped one, so no work is taken twice.
func (c *Controller) RunTakeovers(ctx context.Context) error {
	for {
		if err := c.TakeOverStopped(ctx); err != nil && ctx.Err() == nil {
			c.logger.Error("controller: taking over stopped work", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(TakeoverInterval):
		}
	}
}

// TakeOverStopped does one round of RunTakeovers: a provision left by a
// stopped process is marked failed (the broker's answer is lost); a task
// goes to the Takeover registered for its kind, which carries it on from
// its recorded progress, or is marked failed when there is none.
func (c *Controller) TakeOverStopped(ctx context.Context) error {
	me := c.node.Owner()
	now := ts(c.now())
	// Look first without writing: most rounds find nothing.
	var found bool
	if err := c.db.Read(ctx, func(tx *store.Tx) error {
		stopped, err := c.stoppedOwners(tx, me)
		found = len(stopped) > 0
		return err
	}); err != nil || !found {
		return err
	}
	var taken []*Task
	err := c.db.Tx(ctx, func(tx *store.Tx) error {
		taken = nil
		stopped, err := c.stoppedOwners(tx, me)
		if err != nil || len(stopped) == 0 {
			return err
		}
		failed := Operation{Type: "create", State: "failed", Description: "Provisioning was interrupted by a restart"}
		for _, owner := range stopped {
			if _, err := tx.Exec(`UPDATE rc_instances SET state = ?, last_operation = ?, updated_at = ?, owner = '' WHERE state = ? AND owner = ?`,
				StateFailed, failed.json(), now, StateProvisioning, owner); err != nil {
				return err
			}
			tasks, err := c.tasks.scanAll(tx, `SELECT `+taskColumns+` FROM rc_tasks WHERE status IN (?, ?) AND owner = ?`, TaskQueued, TaskRunning, owner)
			if err != nil {
				return err
			}
			for _, task := range tasks {
				if c.tasks.takeover(task.ResourceType, task.Description) == nil {
					if _, err := tx.Exec(`UPDATE rc_tasks SET status = ?, reason = ?, updated_at = ? WHERE id = ? AND owner = ?`,
						TaskFailed, "Interrupted by a restart", now, task.ID, owner); err != nil {
						return err
					}
					continue
				}
				if _, err := tx.Exec(`UPDATE rc_tasks SET owner = ?, updated_at = ? WHERE id = ? AND owner = ?`, me, now, task.ID, owner); err != nil {
					return err
				}
				task.owner = me
				taken = append(taken, task)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, task := range taken {
		c.logger.Info("controller: took over a task", "task", task.CRN.String(), "description", task.Description, "progress", task.ProgressPercent)
		// The task is this process's now, whether or not it keeps the
		// schedulers' lease: it runs outside the lease's context.
		c.tasks.takeover(task.ResourceType, task.Description)(context.Background(), task)
	}
	return nil
}

// stoppedOwners lists the owners of unfinished work, other than me, whose
// process no longer runs.
func (c *Controller) stoppedOwners(tx *store.Tx, me string) ([]string, error) {
	rows, err := tx.Query(`SELECT owner FROM rc_tasks WHERE status IN (?, ?) AND owner <> ?
		UNION SELECT owner FROM rc_instances WHERE state = ? AND owner <> ?`, TaskQueued, TaskRunning, me, StateProvisioning, me)
	if err != nil {
		return nil, err
	}
	var owners []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			rows.Close()
			return nil, err
		}
		owners = append(owners, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var stopped []string
	for _, o := range owners {
		live, err := c.node.OwnerLive(tx, o)
		if err != nil {
			return nil, err
		}
		if !live {
			stopped = append(stopped, o)
		}
	}
	return stopped, nil
}

// scanAll reads the tasks a query selects.
func (t *Tasks) scanAll(tx *store.Tx, query string, args ...any) ([]*Task, error) {
	rows, err := tx.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Task
	for rows.Next() {
		task, err := t.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, task)
	}
	return out, rows.Err()
}
