package kpapi_test

import (
	"fmt"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
)

// TestKeyStateTransitions drives every action of the Key Protect state
// table (§3.4) on a key in every state and checks the exact outcome.
func TestKeyStateTransitions(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	dek := b64([]byte("0123456789abcdef0123456789abcdef"))

	// inState makes a fresh root key in the named state and returns it with
	// a ciphertext it wrapped while it was active.
	inState := func(t *testing.T, state string) (string, []byte) {
		var exp *time.Time
		if state == "deactivated" {
			x := e.clock.Now().Add(time.Hour)
			exp = &x
		}
		k := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "state-"+state, exp))
		ct := must[[]byte](t)(c.Wrap(e.ctx, k.ID, dek, nil))
		switch state {
		case "suspended":
			ok(t, c.DisableKey(e.ctx, k.ID))
		case "deactivated":
			e.clock.Advance(2 * time.Hour)
		case "destroyed":
			_, err := c.DeleteKey(e.ctx, k.ID, kp.ReturnMinimal)
			ok(t, err)
			e.clock.Advance(time.Minute)
		}
		return k.ID, ct
	}
	actions := map[string]func(id string, ct []byte) error{
		"rotate":  func(id string, _ []byte) error { return c.Rotate(e.ctx, id, "") },
		"wrap":    func(id string, _ []byte) error { _, err := c.Wrap(e.ctx, id, dek, nil); return err },
		"unwrap":  func(id string, ct []byte) error { _, err := c.Unwrap(e.ctx, id, ct, nil); return err },
		"disable": func(id string, _ []byte) error { return c.DisableKey(e.ctx, id) },
		"enable":  func(id string, _ []byte) error { return c.EnableKey(e.ctx, id) },
		"delete":  func(id string, _ []byte) error { _, err := c.DeleteKey(e.ctx, id, kp.ReturnMinimal); return err },
		"restore": func(id string, _ []byte) error { _, err := c.RestoreKey(e.ctx, id); return err },
		"get":     func(id string, _ []byte) error { _, err := c.GetKeyMetadata(e.ctx, id); return err },
	}
	const okay = "ok"
	invalid, gone := "409 KEY_ACTION_INVALID_STATE_ERR", "410 KEY_DELETED_ERR"
	table := map[string]map[string]string{
		"active":      {"rotate": okay, "wrap": okay, "unwrap": okay, "disable": okay, "enable": invalid, "delete": okay, "restore": invalid, "get": okay},
		"suspended":   {"rotate": invalid, "wrap": invalid, "unwrap": invalid, "disable": invalid, "enable": okay, "delete": okay, "restore": invalid, "get": okay},
		"deactivated": {"rotate": okay, "wrap": invalid, "unwrap": okay, "disable": invalid, "enable": invalid, "delete": okay, "restore": invalid, "get": okay},
		"destroyed":   {"rotate": gone, "wrap": gone, "unwrap": gone, "disable": gone, "enable": gone, "delete": gone, "restore": okay, "get": okay},
	}
	for _, state := range []string{"active", "suspended", "deactivated", "destroyed"} {
		for _, action := range []string{"rotate", "wrap", "unwrap", "disable", "enable", "delete", "restore", "get"} {
			want := table[state][action]
			t.Run(state+"/"+action, func(t *testing.T) {
				id, ct := inState(t, state)
				err := actions[action](id, ct)
				got := okay
				if err != nil {
					got = fmt.Sprintf("%d %s", kpStatus(err), kpCode(err))
				}
				if got != want {
					t.Fatalf("%s on a %s key: got %s, want %s (%v)", action, state, got, want, err)
				}
			})
		}
	}
}
