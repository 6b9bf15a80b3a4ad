package streams

import (
	"context"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

func dekAAD(c []string) []byte { return []byte(c[0] + "\x00" + c[1]) }

// SealedColumns are the service-managed DEKs of deployments without a disk
// key, sealed under the master key. A rotation re-seals them through
// ResealMasterDEKs, as the deployments hold them in memory too.
var SealedColumns = []seal.SealedColumn{
	{Table: "streams_deployments", Key: "guid", Column: "wrapped_dek", Where: "disk_key_crn = ''",
		AADColumns: []string{"crn", "dek_id"}, AAD: dekAAD},
	{Table: "streams_deployments", Key: "guid", Column: "next_wrapped_dek", Where: "disk_key_crn = '' AND next_wrapped_dek IS NOT NULL",
		AADColumns: []string{"crn", "next_dek_id"}, AAD: dekAAD},
}

// ResealMasterDEKs re-seals the service-managed DEKs with reseal (which
// returns nil for a value already sealed by the current master key) in
// memory and in the database, and says how many deployments it wrote. The
// record in memory changes under the deployment's lock, so what the
// deployment writes later carries the new values.
func (s *Service) ResealMasterDEKs(ctx context.Context, reseal func(sealed, aad []byte) ([]byte, error)) (int, error) {
	const op = "streams.ResealMasterDEKs"
	s.mu.Lock()
	var ds []*deployment
	for _, d := range s.deployments {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	n := 0
	for _, d := range ds {
		d.mu.Lock()
		if d.rec.DiskKeyCRN != "" {
			d.mu.Unlock()
			continue
		}
		err := resealDEK(&d.rec.WrappedDEK, d.aad(d.rec.DEKID), reseal)
		if err == nil && len(d.rec.NextWrappedDEK) > 0 {
			err = resealDEK(&d.rec.NextWrappedDEK, d.aad(d.rec.NextDEKID), reseal)
		}
		rec := *d.rec
		d.mu.Unlock()
		if err != nil {
			return n, errs.E(op, errs.Internal, "DEK_UNWRAP_FAILED", "A service-managed DEK opens with no master key of the keyring").Because(err)
		}
		// Written even when memory was current already: a write of an
		// older copy may have put the old value back.
		if err := s.db.Tx(ctx, func(tx *store.Tx) error { return updateRecord(tx, &rec) }); err != nil {
			return n, errs.Internalf(op, err)
		}
		n++
	}
	return n, nil
}

func resealDEK(wrapped *[]byte, aad []string, reseal func(sealed, aad []byte) ([]byte, error)) error {
	next, err := reseal(*wrapped, dekAAD(aad))
	if err == nil && next != nil {
		*wrapped = next
	}
	return err
}
