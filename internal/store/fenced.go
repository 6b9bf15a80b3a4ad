package store

import (
	"context"
	"errors"

	"github.com/keyline/keyline/internal/errs"
)

// TxFenced runs fn in a write transaction that takes neither the
// cluster-wide writers' lock nor this process's one writer connection: for
// writers whose transactions fence themselves (a conditional UPDATE that
// matches no row once another writer moved on), such as the commits of
// objlog's flushes, which would otherwise hold every other write of the
// cluster behind them. It commits synchronously. It cannot mark changes
// (their order comes from the writers' lock). On SQLite, with one writer
// anyway, it is Tx.
func (db *DB) TxFenced(ctx context.Context, fn func(*Tx) error) error {
	const op = "store.TxFenced"
	if db.pg == nil {
		return db.Tx(ctx, fn)
	}
	sqlTx, err := db.read.BeginTx(ctx, nil)
	if err != nil {
		return errs.Internalf(op, err)
	}
	defer sqlTx.Rollback()
	if _, err := sqlTx.ExecContext(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
		return errs.Internalf(op, err)
	}
	tx := &Tx{tx: sqlTx, ctx: ctx, db: db}
	if err := fn(tx); err != nil {
		return err
	}
	if len(tx.changes) > 0 {
		return errs.Internalf(op, errors.New("a fenced transaction cannot mark changes"))
	}
	if err := sqlTx.Commit(); err != nil {
		return errs.Internalf(op, err)
	}
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}
