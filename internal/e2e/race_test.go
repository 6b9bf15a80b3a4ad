package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/store/storetest"
)

// kmsManager makes a service ID with the Manager role on a Key Protect
// instance and returns its client on each node.
func kmsManager(t *testing.T, nodes []*clusterNode, account, guid, name string) []*api {
	admin := nodes[0].admin
	sid := admin.must("POST", "/v1/serviceids", nil, map[string]any{"name": name, "account_id": account})
	key := admin.must("POST", "/v1/apikeys", nil, map[string]any{"name": name + "-key", "iam_id": sid["iam_id"], "account_id": account})["apikey"].(string)
	admin.must("POST", "/v1/policies", nil, map[string]any{
		"type":     "access",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
		"roles":    []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Manager"}},
		"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account},
			map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": guid}}}},
	})
	var out []*api
	for _, n := range nodes {
		a := &api{t: t, c: client.New(n.proc.url, key)}
		within(t, name+"'s policy reaches "+n.id, func() bool { return a.do("GET", "/api/v2/keys", kpHeader(guid), nil, nil) == nil })
		out = append(out, a)
	}
	return out
}

// race runs each call at once (as near as goroutines can) and returns
// their HTTP statuses in order.
func race(calls ...func() error) []int {
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]int, len(calls))
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i] = status(call())
		}()
	}
	close(start)
	wg.Wait()
	return got
}

// TestTwoNodesKeepTheKeyRulesUnderRacesOnPostgreSQL sends conflicting
// calls to two nodes at once, many times over, and checks that the KMS
// rules hold across them as they do in one process:
//   - one rotation per hour: the same new key rotated through both nodes at
//     once is rotated exactly once, the other call refused (409);
//   - dual authorization: with a first authorization by Alice standing,
//     Bob's deletion through node 2 and Alice's withdrawal through node 1
//     race; never do both succeed, and a key is deleted only when Bob's
//     deletion succeeded (by Bob, with Alice's authorization standing).
//     Alice's own deletion racing her authorization never deletes a key.
func TestTwoNodesKeepTheKeyRulesUnderRacesOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	nodes := startCluster(t, databaseURL, 2)
	account, _ := nodes[0].admin.account()
	guid := nodes[0].admin.createInstance("race-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	alice := kmsManager(t, nodes, account, guid, "alice")
	bob := kmsManager(t, nodes, account, guid, "bob")
	const rounds = 15

	t.Run("one rotation per hour", func(t *testing.T) {
		for i := range rounds {
			id, _ := alice[0].createRootKey(guid, fmt.Sprintf("rotate-%d", i))
			rotate := func(a *api) func() error {
				return func() error {
					return a.do("POST", client.Path("api", "v2", "keys", id, "actions", "rotate"), kpHeader(guid), nil, nil)
				}
			}
			got := race(rotate(alice[0]), rotate(bob[1]))
			ok, refused := 0, 0
			for _, s := range got {
				switch s {
				case http.StatusOK, http.StatusNoContent:
					ok++
				case http.StatusConflict:
					refused++
				}
			}
			if ok != 1 || refused != 1 {
				t.Fatalf("round %d: two rotations raced through two nodes answered %v, want one success and one 409", i, got)
			}
			var versions struct {
				Resources []any `json:"resources"`
			}
			if err := alice[0].do("GET", client.Path("api", "v2", "keys", id, "versions"), kpHeader(guid), nil, &versions); err != nil {
				t.Fatal(err)
			}
			if len(versions.Resources) != 2 {
				t.Fatalf("round %d: the key has %d versions after one rotation", i, len(versions.Resources))
			}
		}
	})

	// A key under dual authorization.
	dualKey := func(name string) string {
		body := map[string]any{
			"metadata": map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
			"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false,
				"dualAuthDelete": map[string]any{"enabled": true}}},
		}
		out := alice[0].must("POST", "/api/v2/keys_with_policy_overrides", kpHeader(guid), body)
		return out["resources"].([]any)[0].(map[string]any)["id"].(string)
	}
	action := func(a *api, id, name string) func() error {
		return func() error {
			return a.do("POST", client.Path("api", "v2", "keys", id, "actions", name), kpHeader(guid), nil, nil)
		}
	}
	del := func(a *api, id string) func() error {
		return func() error { return a.do("DELETE", client.Path("api", "v2", "keys", id), kpHeader(guid), nil, nil) }
	}
	deleted := func(id string) bool {
		var out struct {
			Resources []struct {
				State int `json:"state"`
			} `json:"resources"`
		}
		if err := alice[0].do("GET", client.Path("api", "v2", "keys", id, "metadata"), kpHeader(guid), nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Resources[0].State == 5
	}

	t.Run("dual authorization", func(t *testing.T) {
		for i := range rounds {
			id := dualKey(fmt.Sprintf("dual-%d", i))
			if err := action(alice[0], id, "setKeyForDeletion")(); err != nil {
				t.Fatal(err)
			}
			got := race(del(bob[1], id), action(alice[0], id, "unsetKeyForDeletion"))
			bobDeleted, aliceWithdrew := got[0] < 300, got[1] < 300
			if bobDeleted == aliceWithdrew {
				t.Fatalf("round %d: Bob's deletion and Alice's withdrawal raced through two nodes answered %v: exactly one must win", i, got)
			}
			if deleted(id) != bobDeleted {
				t.Fatalf("round %d: deletion answered %d but the key's deleted state is %v", i, got[0], !bobDeleted)
			}

			// Alice alone: her authorization and her own deletion race.
			id = dualKey(fmt.Sprintf("alone-%d", i))
			got = race(action(alice[0], id, "setKeyForDeletion"), del(alice[1], id))
			if got[1] < 300 || deleted(id) {
				t.Fatalf("round %d: Alice deleted a dual-authorization key on her own (%v)", i, got)
			}
		}
	})
}
