package server

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/console"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams"
)

// A master key rotation: a new master key joins the keyring and seals
// everything new at once; a background task re-seals every sealed column
// row by row in small transactions (wraps and Kafka go on), recording its
// cursor in seal_rotation so that the next unseal resumes it; when no value
// sealed by the old key is left, the old key leaves the keyring and memory.

// Rotation states.
const (
	RotationRunning   = "running"
	RotationCompleted = "completed"
	RotationFailed    = "failed"
)

// defaultRotationBatch is how many rows one transaction re-seals: short
// enough that writers never wait long for the database.
const defaultRotationBatch = 100

// masterRotation is the rotation's in-memory side.
type masterRotation struct {
	// keyringMu orders writes of seal_config.keyring and of the unseal
	// key in memory (rotation, rekey). Taken after barrier.mu, never
	// before: the rotation task takes it alone.
	keyringMu sync.Mutex
	wake      chan struct{}
}

// RotationStatus is GET /v1/sys/rotate-master-key.
type RotationStatus struct {
	State           string   `json:"state"` // "" when no rotation ever ran
	FromVersion     uint32   `json:"from_version,omitempty"`
	ToVersion       uint32   `json:"to_version,omitempty"`
	Done            int64    `json:"done"`
	Total           int64    `json:"total"`
	ProgressPercent int      `json:"progress_percent"`
	Reason          string   `json:"reason,omitempty"`
	StartedAt       string   `json:"started_at,omitempty"`
	FinishedAt      string   `json:"finished_at,omitempty"`
	KeyVersions     []uint32 `json:"key_versions"`
	step            int
	cursor          string
}

// masterSealedColumns are walked in this order; the streams DEKs come
// after them, through the deployments (see ResealMasterDEKs).
func masterSealedColumns() []seal.SealedColumn {
	return append(append(append([]seal.SealedColumn(nil), kms.SealedColumns...), iam.SealedColumns...), controller.SealedColumns...)
}

// MasterSealedColumns are every column sealed under the master key.
func MasterSealedColumns() []seal.SealedColumn {
	return append(masterSealedColumns(), streams.SealedColumns...)
}

func readRotation(ctx context.Context, db *store.DB) (*RotationStatus, error) {
	var st RotationStatus
	var from, to int64
	err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT state, from_version, to_version, step, cursor_key, done, total, reason, started_at, finished_at FROM seal_rotation WHERE id = 1`).
			Scan(&st.State, &from, &to, &st.step, &st.cursor, &st.Done, &st.Total, &st.Reason, &st.StartedAt, &st.FinishedAt)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return &RotationStatus{}, nil
	}
	if err != nil {
		return nil, err
	}
	st.FromVersion, st.ToVersion = uint32(from), uint32(to)
	return &st, nil
}

func writeRotation(tx *store.Tx, st *RotationStatus) error {
	_, err := tx.Exec(`INSERT INTO seal_rotation (id, state, from_version, to_version, step, cursor_key, done, total, reason, started_at, finished_at)
		VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, from_version = excluded.from_version, to_version = excluded.to_version,
		step = excluded.step, cursor_key = excluded.cursor_key, done = excluded.done, total = excluded.total, reason = excluded.reason,
		started_at = excluded.started_at, finished_at = excluded.finished_at`,
		st.State, int64(st.FromVersion), int64(st.ToVersion), st.step, st.cursor, st.Done, st.Total, st.Reason, st.StartedAt, st.FinishedAt)
	return err
}

// RotationStatus is the last rotation's progress and the keyring's
// versions.
func (s *Server) RotationStatus(ctx context.Context) (RotationStatus, error) {
	s.barrier.mu.Lock()
	ring := s.barrier.ring
	s.barrier.mu.Unlock()
	return s.rotationStatus(ctx, ring)
}

func (s *Server) rotationStatus(ctx context.Context, ring *seal.Keyring) (RotationStatus, error) {
	st, err := readRotation(ctx, s.db)
	if err != nil {
		return RotationStatus{}, errs.Internalf("sys.rotate-master-key", err)
	}
	if st.Total > 0 {
		st.ProgressPercent = int(min(100, st.Done*100/st.Total))
	}
	if st.State == RotationCompleted {
		st.ProgressPercent = 100
	}
	if ring != nil {
		st.KeyVersions = ring.Versions()
	}
	return *st, nil
}

// RotateMasterKey starts a rotation (or resumes a failed one) and returns
// at once; the task runs with the services.
func (s *Server) RotateMasterKey(ctx context.Context, ev *audit.Event) (RotationStatus, error) {
	const op = "sys.rotate-master-key"
	b := s.barrier
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.cfg.Mode == SealDev:
		return RotationStatus{}, errs.E(op, errs.Invalid, "DEV_MODE", "A dev-mode Keyline keeps its master key in a file and cannot rotate it; run `keyline operator init` first")
	case b.sealed:
		return RotationStatus{}, errs.E(op, errs.Unavailable, "SEALED", "Keyline is sealed: unseal it first")
	case b.cfg.Keyring == nil:
		if b.cfg.Mode != SealShamir {
			return RotationStatus{}, errs.E(op, errs.Conflict, "REKEY_FIRST",
				"This data directory's "+b.cfg.Mode+" seal wraps its master key itself: run `keyline operator rekey` first, which moves it to a keyring under a new unseal key, then rotate")
		}
		return RotationStatus{}, errs.E(op, errs.Conflict, "REKEY_FIRST",
			"This data directory's unseal key shares are its master key itself: run `keyline operator rekey` first, which moves it to a keyring under a new unseal key, then rotate")
	}
	r := &b.rotation
	r.keyringMu.Lock()
	defer r.keyringMu.Unlock()
	st, err := readRotation(ctx, s.db)
	if err != nil {
		return RotationStatus{}, errs.Internalf(op, err)
	}
	if st.State == RotationRunning {
		return s.rotationStatus(ctx, b.ring)
	}
	resume := st.State == RotationFailed && len(b.ring.Versions()) > 1
	var next *seal.Keyring
	if !resume {
		if next, err = b.ring.WithNewKey(); err != nil {
			return RotationStatus{}, errs.Internalf(op, err)
		}
		st = &RotationStatus{FromVersion: b.ring.Current(), ToVersion: next.Current(), StartedAt: store.Time(s.cfg.Clock.Now())}
	}
	st.State, st.Reason = RotationRunning, ""
	total, err := s.countSealed(ctx)
	if err != nil {
		return RotationStatus{}, errs.Internalf(op, err)
	}
	st.Total = max(total, st.Done)
	addRequestData(ev, map[string]any{"from_version": st.FromVersion, "to_version": st.ToVersion, "resumed": resume})
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if next != nil {
			sealedRing, err := next.SealWith(b.unsealKey)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE seal_config SET keyring = ? WHERE id = 1`, sealedRing); err != nil {
				return err
			}
			keyringChanged(tx, keyringRotated)
		}
		if err := writeRotation(tx, st); err != nil {
			return err
		}
		return s.Audit.Append(tx, ev)
	})
	if err != nil {
		return RotationStatus{}, errs.Internalf(op, err)
	}
	if next != nil {
		// From here everything new is sealed by the new key.
		b.ring.Replace(next)
	}
	s.cfg.Logger.Info("master key rotation started", "from_version", st.FromVersion, "to_version", st.ToVersion, "values", st.Total)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return s.rotationStatus(ctx, b.ring)
}

// countSealed counts the values a rotation walks.
func (s *Server) countSealed(ctx context.Context) (int64, error) {
	var total int64
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		for _, c := range MasterSealedColumns() {
			var n int64
			if err := tx.QueryRow(`SELECT COUNT(*) FROM ` + c.Table + where(c, "")).Scan(&n); err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	return total, err
}

func where(c seal.SealedColumn, cursorCond string) string {
	var conds []string
	if cursorCond != "" {
		conds = append(conds, cursorCond)
	}
	if c.Where != "" {
		conds = append(conds, "("+c.Where+")")
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// runMasterRotation is the rotation task: it runs a rotation the database
// says is running (one started, or one a stop interrupted) and then waits
// for the next.
func (s *Server) runMasterRotation(ctx context.Context) error {
	r := &s.barrier.rotation
	for {
		st, err := readRotation(ctx, s.db)
		if err == nil && st.State == RotationRunning {
			err = s.rotate(ctx, st)
		}
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("master key rotation failed; `keyline operator rotate-master-key` resumes it", "err", err)
			s.failRotation(ctx, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		}
	}
}

func (s *Server) failRotation(ctx context.Context, cause error) {
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE seal_rotation SET state = ?, reason = ? WHERE id = 1 AND state = ?`, RotationFailed, cause.Error(), RotationRunning)
		return err
	})
	if err != nil {
		s.cfg.Logger.Error("master key rotation: recording the failure", "err", err)
	}
}

// rotate walks from the recorded cursor to the end, checks that nothing
// sealed by an older key is left, and drops the older key.
func (s *Server) rotate(ctx context.Context, st *RotationStatus) error {
	ring := s.barrier.ring
	// A start holds the lock until the new key is current in memory.
	s.barrier.rotation.keyringMu.Lock()
	current := ring.Current()
	s.barrier.rotation.keyringMu.Unlock()
	if current != st.ToVersion {
		return fmt.Errorf("the keyring's current master key is version %d, the rotation's target %d", current, st.ToVersion)
	}
	cols := masterSealedColumns()
	for attempt := 0; ; attempt++ {
		for st.step < len(cols) {
			if err := s.resealBatch(ctx, ring, cols[st.step], st); err != nil {
				return err
			}
		}
		// Then what lives outside these columns: the deployments' DEKs
		// (held in memory too) and the headers of master-sealed backups.
		for st.step <= len(cols)+1 {
			var n int
			var err error
			if st.step == len(cols) {
				n, err = s.svc.streams.ResealMasterDEKs(ctx, resealer(ring))
			} else {
				n, err = s.svc.backups.ResealMasterBackups(ctx, sealedByCurrent(ring), true)
			}
			if err != nil {
				return err
			}
			st.step++
			st.Done += int64(n)
			if err := s.db.Tx(ctx, func(tx *store.Tx) error { return writeRotation(tx, st) }); err != nil {
				return err
			}
		}
		left, err := s.countOlder(ctx, ring)
		if err != nil {
			return err
		}
		backups, err := s.svc.backups.ResealMasterBackups(ctx, sealedByCurrent(ring), false)
		if err != nil {
			return err
		}
		left += backups
		if left == 0 {
			break
		}
		// A writer put back a value it had read before the walk passed:
		// walk again.
		if attempt == 2 {
			return fmt.Errorf("%d values are still sealed by an older master key after three walks "+
				"(a backup of a deployment without a key that is still running counts)", left)
		}
		total, err := s.countSealed(ctx)
		if err != nil {
			return err
		}
		st.step, st.cursor, st.Done, st.Total = 0, "", 0, total
	}
	return s.finishRotation(ctx, ring, st)
}

// sealedByCurrent says whether the current master key sealed a value.
func sealedByCurrent(ring *seal.Keyring) func(sealed, aad []byte) bool {
	return func(sealed, aad []byte) bool {
		pt, v, err := ring.Open(sealed, aad)
		seal.Wipe(pt)
		return err == nil && v == ring.Current()
	}
}

// resealer re-seals a value under the current key; nil when it is current.
func resealer(ring *seal.Keyring) func(sealed, aad []byte) ([]byte, error) {
	master := ring.AEAD()
	return func(sealed, aad []byte) ([]byte, error) {
		pt, v, err := ring.Open(sealed, aad)
		if err != nil {
			return nil, err
		}
		defer seal.Wipe(pt)
		if v == ring.Current() {
			return nil, nil
		}
		return master.Seal(pt, aad), nil
	}
}

// A SealedValue is one row's value of a SealedColumn.
type SealedValue struct {
	Key         string
	Sealed, AAD []byte
	Stored      any // the column's value as stored, to update only if unchanged
}

// Querier is a database or a transaction.
type Querier interface {
	Query(query string, args ...any) (*sql.Rows, error)
}

// ScanSealed reads the values of c whose key comes after after, in key
// order, at most limit of them (0: all), and gives each to fn.
func ScanSealed(q Querier, c seal.SealedColumn, after string, limit int, fn func(SealedValue) error) error {
	cols := append(append([]string{c.Key}, c.AADColumns...), c.Column)
	query := `SELECT ` + strings.Join(cols, ", ") + ` FROM ` + c.Table + where(c, c.Key+" > ?") + ` ORDER BY ` + c.Key
	args := []any{after}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := q.Query(query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		strs := make([]string, len(cols)-1)
		vals := make([]any, len(cols))
		for i := range strs {
			vals[i] = &strs[i]
		}
		var blob []byte
		vals[len(cols)-1] = &blob
		if err := rows.Scan(vals...); err != nil {
			return err
		}
		v := SealedValue{Key: strs[0], Sealed: blob, AAD: c.AAD(strs[1:]), Stored: blob}
		if c.Base64 {
			v.Stored = string(blob)
			if v.Sealed, err = base64.StdEncoding.DecodeString(string(blob)); err != nil {
				return fmt.Errorf("%s.%s of %s is not base64", c.Table, c.Column, v.Key)
			}
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return rows.Err()
}

// resealBatch re-seals the next rows of column c after the cursor and
// records the new cursor in the same transaction.
func (s *Server) resealBatch(ctx context.Context, ring *seal.Keyring, c seal.SealedColumn, st *RotationStatus) error {
	batch := s.cfg.MasterRotationBatch
	if batch <= 0 {
		batch = defaultRotationBatch
	}
	reseal := resealer(ring)
	update := `UPDATE ` + c.Table + ` SET ` + c.Column + ` = ? WHERE ` + c.Key + ` = ? AND ` + c.Column + ` = ?`
	next := *st
	began := time.Now()
	// Without an fsync of its own: a batch lost to a power cut is walked
	// again, and the finish's fsync makes every batch before it durable.
	err := s.db.TxNoSync(ctx, func(tx *store.Tx) error {
		var rows []SealedValue
		if err := ScanSealed(tx, c, st.cursor, batch, func(v SealedValue) error { rows = append(rows, v); return nil }); err != nil {
			return err
		}
		for _, r := range rows {
			resealed, err := reseal(r.Sealed, r.AAD)
			if err != nil {
				return fmt.Errorf("%s.%s of %s opens with no master key of the keyring: %w", c.Table, c.Column, r.Key, err)
			}
			if resealed != nil {
				var v any = resealed
				if c.Base64 {
					v = base64.StdEncoding.EncodeToString(resealed)
				}
				// Only if unchanged: a writer since the read sealed its
				// value with the new key already.
				if _, err := tx.Exec(update, v, r.Key, r.Stored); err != nil {
					return err
				}
			}
			next.cursor = r.Key
			next.Done++
		}
		if len(rows) < batch {
			next.step, next.cursor = next.step+1, ""
		}
		return writeRotation(tx, &next)
	})
	if err != nil {
		return err
	}
	*st = next
	if hook := s.cfg.MasterRotationHook; hook != nil {
		hook(ctx, st.Done)
	}
	// The database's writer is as much others' as the rotation's: wait as
	// long as the batch held it, so that calls' writes (their audit events)
	// are not queued behind batch after batch.
	select {
	case <-ctx.Done():
	case <-time.After(time.Since(began)):
	}
	return ctx.Err()
}

// countOlder counts the values in the database not sealed by the current
// key.
func (s *Server) countOlder(ctx context.Context, ring *seal.Keyring) (int, error) {
	left := 0
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		for _, c := range MasterSealedColumns() {
			current := sealedByCurrent(ring)
			err := ScanSealed(tx, c, "", 0, func(v SealedValue) error {
				if !current(v.Sealed, v.AAD) {
					left++
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return left, err
}

// finishRotation drops the older key from the stored keyring and then from
// memory.
func (s *Server) finishRotation(ctx context.Context, ring *seal.Keyring, st *RotationStatus) error {
	r := &s.barrier.rotation
	r.keyringMu.Lock()
	defer r.keyringMu.Unlock()
	next := ring
	for _, v := range ring.Versions() {
		if v == ring.Current() {
			continue
		}
		var err error
		if next, err = next.Without(v); err != nil {
			return err
		}
	}
	sealedRing, err := next.SealWith(s.barrier.unsealKey)
	if err != nil {
		return err
	}
	st.State, st.FinishedAt, st.Done = RotationCompleted, store.Time(s.cfg.Clock.Now()), max(st.Done, st.Total)
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`UPDATE seal_config SET keyring = ? WHERE id = 1`, sealedRing); err != nil {
			return err
		}
		keyringChanged(tx, keyringRotated)
		// Console sessions are not re-sealed: the few sealed by the older
		// key go with it, and their users sign in again.
		if n, err := console.DropSessionsSealedBefore(tx, sealedByCurrent(ring)); err != nil {
			return err
		} else if n > 0 {
			s.cfg.Logger.Info("master key rotation: console sessions sealed by the old master key end", "sessions", n)
		}
		return writeRotation(tx, st)
	})
	if err != nil {
		return err
	}
	ring.Replace(next)
	s.cfg.Logger.Info("master key rotation completed: the old master key is dropped", "version", st.ToVersion, "values", st.Done)
	return nil
}
