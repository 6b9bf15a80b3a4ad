package e2e

import (
	"database/sql"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/store/storetest"
)

// schedulersHolder is the node that GET /v1/cluster/nodes on n lists as
// holding the schedulers' lease ("" when none).
func schedulersHolder(t *testing.T, n *clusterNode) string {
	t.Helper()
	var out struct {
		Nodes []struct {
			ID     string   `json:"id"`
			Leases []string `json:"leases"`
		} `json:"nodes"`
	}
	if err := n.admin.do("GET", "/v1/cluster/nodes", nil, nil, &out); err != nil {
		t.Fatal(err)
	}
	holder := ""
	for _, node := range out.Nodes {
		if slices.Contains(node.Leases, "schedulers") {
			if holder != "" {
				t.Fatalf("two nodes hold the schedulers' lease: %s and %s", holder, node.ID)
			}
			holder = node.ID
		}
	}
	return holder
}

// TestSchedulersRunOnceAndMoveOnKillOnPostgreSQL runs the KMS scheduler on
// a cluster: node 1 holds the schedulers' lease; a key's rotation policy is
// made due; nodes 2 and 3 start (each starting node used to run every
// scheduler at once, so the key rotated once per node); node 1, the
// holder, is killed with SIGKILL; another node takes the lease within 10
// seconds, as GET /v1/cluster/nodes shows, rotates the key, and the key is
// rotated exactly once in all.
func TestSchedulersRunOnceAndMoveOnKillOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keyFile := filepath.Join(t.TempDir(), "master.key")
	n1 := startClusterNode(t, databaseURL, keyFile, "node-1")
	within(t, "node 1 holds the schedulers' lease", func() bool { return schedulersHolder(t, n1) == "node-1" })

	guid := n1.admin.createInstance("leases-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	keyID, _ := n1.admin.createRootKey(guid, "rotated-monthly")
	n1.admin.must("PUT", client.Path("api", "v2", "keys", keyID, "policies")+"?"+url.Values{"policy": {"rotation"}}.Encode(), kpHeader(guid),
		map[string]any{
			"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
			"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.policy+json", "rotation": map[string]any{"enabled": true, "interval_month": 1}}},
		})
	versions := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM kms_key_versions WHERE key_id = $1`, keyID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if v := versions(); v != 1 {
		t.Fatalf("a new key has %d versions", v)
	}
	// The key was created two months ago: its rotation is due.
	old := time.Now().UTC().AddDate(0, -2, 0).Format("2006-01-02T15:04:05.000000000Z07:00")
	if _, err := db.Exec(`UPDATE kms_keys SET creation_date = $1, last_rotate_date = '' WHERE id = $2`, old, keyID); err != nil {
		t.Fatal(err)
	}
	n2 := startClusterNode(t, databaseURL, keyFile, "node-2")
	n3 := startClusterNode(t, databaseURL, keyFile, "node-3")
	if h := schedulersHolder(t, n3); h != "node-1" {
		t.Fatalf("after nodes 2 and 3 started the schedulers' lease is held by %q, want node-1", h)
	}

	n1.proc.kill()
	holder := ""
	took := within(t, "another node holds the schedulers' lease", func() bool {
		holder = schedulersHolder(t, n2)
		return holder == "node-2" || holder == "node-3"
	})
	if took > 10*time.Second {
		t.Errorf("the lease moved %v after the kill, want within 10 s", took)
	}
	within(t, "the due rotation", func() bool { return versions() > 1 })
	// Every node has had time to run its scheduler (each runs it when it
	// gets the lease): still one rotation.
	time.Sleep(5 * time.Second)
	if v := versions(); v != 2 {
		t.Fatalf("the key has %d versions: the due rotation ran %d times", v, v-1)
	}
	t.Logf("%s took the lease %v after node 1 was killed", holder, took.Round(time.Millisecond))
}
