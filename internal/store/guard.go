package store

import "context"

type guardKey struct{}

// WithGuard returns a context whose write transactions run guard first,
// under the writers' lock and before their own statements: work done under
// a cluster lease (cluster.Lease) passes the lease's check, so a node that
// lost the lease cannot commit what it started while it held it.
func WithGuard(ctx context.Context, guard func(*Tx) error) context.Context {
	return context.WithValue(ctx, guardKey{}, guard)
}

// checkGuard runs the guard of the transaction's context, if any.
func checkGuard(tx *Tx) error {
	if g, ok := tx.ctx.Value(guardKey{}).(func(*Tx) error); ok {
		return g(tx)
	}
	return nil
}

// WithoutGuard returns ctx without its guard, for work that outlives the
// lease it was started under (a backup the schedulers started runs to its
// end on this node, owned by its task rather than by the lease).
func WithoutGuard(ctx context.Context) context.Context {
	return context.WithValue(ctx, guardKey{}, noGuard)
}

func noGuard(*Tx) error { return nil }
