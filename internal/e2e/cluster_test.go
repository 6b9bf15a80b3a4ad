package e2e

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

// clusterNode is one `keyline serve` process of a cluster test.
type clusterNode struct {
	id    string
	proc  *proc
	admin *api
}

// startCluster runs n `keyline serve` processes on one PostgreSQL database,
// each with its own data directory and the same master key (the dev seal's
// key file, as docs/cluster.md says to share it).
func startCluster(t *testing.T, databaseURL string, n int) []*clusterNode {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "master.key")
	var nodes []*clusterNode
	for i := 1; i <= n; i++ {
		// One after the other: the first creates the master key file and
		// the schema; the others find both.
		nodes = append(nodes, startClusterNode(t, databaseURL, keyFile, fmt.Sprintf("node-%d", i)))
	}
	return nodes
}

// startClusterNode runs one more node of a cluster whose master key is in
// keyFile.
func startClusterNode(t *testing.T, databaseURL, keyFile, id string) *clusterNode {
	t.Helper()
	p := serveProcessWith(t, t.TempDir(), serveOptions{args: []string{"--node-id", id},
		env: []string{"KEYLINE_DATABASE_URL=" + databaseURL, "KEYLINE_MASTER_KEY_FILE=" + keyFile}})
	return &clusterNode{id: id, proc: p, admin: &api{t: t, c: client.New(p.url, adminKey)}}
}

// initShamirCluster initializes the Shamir seal of a cluster on
// databaseURL (3 shares, any 2 unseal) and returns the shares.
func initShamirCluster(t *testing.T, databaseURL string) []string {
	t.Helper()
	res, err := server.Init(context.Background(), server.Config{DataDir: t.TempDir(), DatabaseURL: databaseURL, AdminAPIKey: adminKey, Logger: testLogger(t)}, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	return res.Shares
}

// startSealedNode runs one more node of a Shamir-sealed cluster; it waits
// sealed for its shares.
func startSealedNode(t *testing.T, databaseURL, id string) *clusterNode {
	t.Helper()
	p := serveProcessWith(t, t.TempDir(), serveOptions{args: []string{"--node-id", id}, sealed: true,
		env: []string{"KEYLINE_DATABASE_URL=" + databaseURL}})
	return &clusterNode{id: id, proc: p, admin: &api{t: t, c: client.New(p.url, adminKey)}}
}

// within polls cond until it holds and says how long that took; the test
// fails after a deadline far beyond the feed's one second, so a loaded
// machine cannot make it flaky, while a node that never hears the change
// (a cache nothing invalidates) fails it.
func within(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	waitFor(t, 15*time.Second, what, cond)
	took := time.Since(start)
	t.Logf("%s after %v", what, took.Round(time.Millisecond))
	return took
}

// status is the HTTP status of a call (0 when it could not be made).
func status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	if ce, ok := err.(*client.Error); ok {
		return ce.Status
	}
	return 0
}

// TestThreeNodesShareStateOnPostgreSQL starts a throwaway PostgreSQL schema
// and three `keyline serve` processes on it, and checks that no node acts
// on a stale security decision: a key disabled through node 1 stops
// wrapping on nodes 2 and 3, a policy revoked through node 2 denies the
// next calls on node 3, an API key deleted through node 3 is refused by
// node 1 (its cached token too), a token issued by node 1 is accepted by
// node 2, the audit follow stream of node 1 shows every event written
// through nodes 2 and 3, and each node lists the three.
func TestThreeNodesShareStateOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	nodes := startCluster(t, databaseURL, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	account, _ := n1.admin.account()
	guid := n1.admin.createInstance("cluster-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	keyID, _ := n1.admin.createRootKey(guid, "cluster-root")
	wrapPath := client.Path("api", "v2", "keys", keyID, "actions", "wrap")
	wrap := func(n *clusterNode, correlation string) error {
		h := kpHeader(guid)
		if correlation != "" {
			h["Correlation-Id"] = correlation
		}
		return n.admin.do("POST", wrapPath, h, map[string]any{"plaintext": "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY="}, nil)
	}

	t.Run("a token from node 1 works on node 2", func(t *testing.T) {
		tok, err := client.New(n1.proc.url, adminKey).Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", n2.proc.url+"/api/v2/keys", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("bluemix-instance", guid)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("node 2 answered %d to node 1's token", resp.StatusCode)
		}
		var jwks struct {
			Keys []struct {
				Kid string `json:"kid"`
			} `json:"keys"`
		}
		for _, n := range nodes {
			n.admin.do("GET", "/identity/keys", nil, nil, &jwks)
			if len(jwks.Keys) == 0 {
				t.Fatalf("%s publishes no signing key", n.id)
			}
		}
	})

	t.Run("the audit follow stream of node 1 shows every event of nodes 2 and 3", func(t *testing.T) {
		tok, err := client.New(n1.proc.url, adminKey).Token(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", n1.proc.url+"/v1/audit/events?follow=true&action=kms.secrets.wrap", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("follow: HTTP %d", resp.StatusCode)
		}
		seen := make(chan string, 256)
		go func() {
			defer close(seen)
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var ev struct {
					CorrelationID string `json:"correlationId"`
				}
				if json.Unmarshal(sc.Bytes(), &ev) == nil {
					seen <- ev.CorrelationID
				}
			}
		}()
		// Wraps through nodes 2 and 3 at once, so their commits interleave.
		const each = 25
		want := map[string]bool{}
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range []*clusterNode{n2, n3} {
			for i := range each {
				id := fmt.Sprintf("cluster-follow-%s-%02d", n.id, i)
				want[id] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := wrap(n, id); err != nil {
						mu.Lock()
						t.Errorf("wrap through %s: %v", n.id, err)
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		deadline := time.After(30 * time.Second)
		got := map[string]int{}
		for len(got) < len(want) {
			select {
			case id, ok := <-seen:
				if !ok {
					t.Fatalf("the follow stream ended after %d of %d events", len(got), len(want))
				}
				if want[id] {
					got[id]++
				}
			case <-deadline:
				var missing []string
				for id := range want {
					if got[id] == 0 {
						missing = append(missing, id)
					}
				}
				t.Fatalf("node 1's follow stream skipped %d events written through nodes 2 and 3: %v", len(missing), missing)
			}
		}
		for id, c := range got {
			if c != 1 {
				t.Errorf("event %s followed %d times", id, c)
			}
		}
	})

	t.Run("a key disabled through node 1 stops wrapping on nodes 2 and 3", func(t *testing.T) {
		// Nodes 2 and 3 have the key in their caches.
		for _, n := range []*clusterNode{n2, n3} {
			if err := wrap(n, ""); err != nil {
				t.Fatalf("wrap on %s: %v", n.id, err)
			}
		}
		n1.admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "disable"), kpHeader(guid), nil)
		for _, n := range []*clusterNode{n2, n3} {
			within(t, "wrap refused on "+n.id, func() bool { return status(wrap(n, "")) == http.StatusConflict })
		}
		n1.admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "enable"), kpHeader(guid), nil)
		for _, n := range []*clusterNode{n2, n3} {
			within(t, "wrap allowed again on "+n.id, func() bool { return wrap(n, "") == nil })
		}
	})

	// A service ID with Reader on the instance, and its API key.
	sid := n1.admin.must("POST", "/v1/serviceids", nil, map[string]any{"name": "cluster-reader", "account_id": account})
	created := n1.admin.must("POST", "/v1/apikeys", nil, map[string]any{"name": "cluster-reader-key", "iam_id": sid["iam_id"], "account_id": account})
	readerKey := created["apikey"].(string)
	policy := n1.admin.must("POST", "/v1/policies", nil, map[string]any{
		"type":      "access",
		"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
		"roles":     []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
		"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": guid}}}},
	})
	listKeys := func(c *client.Client) error {
		return c.Do(context.Background(), client.Request{Method: "GET", Path: "/api/v2/keys", Header: kpHeader(guid)}, nil)
	}

	t.Run("a policy revoked through node 2 denies calls on node 3", func(t *testing.T) {
		reader := client.New(n3.proc.url, readerKey)
		// The policy was created through node 1: node 3 learns it through
		// the change feed, a few milliseconds later.
		within(t, "the reader allowed on node 3", func() bool { return listKeys(reader) == nil })
		n2.admin.must("DELETE", client.Path("v1", "policies", policy["id"].(string)), nil, nil)
		within(t, "the reader denied on node 3", func() bool { return status(listKeys(reader)) == http.StatusForbidden })
		// Denied from then on, never allowed again by a stale index.
		for range 5 {
			if got := status(listKeys(reader)); got != http.StatusForbidden {
				t.Fatalf("node 3 answered %d to the reader after its policy was revoked", got)
			}
		}
		n1.admin.must("POST", "/v1/policies", nil, map[string]any{
			"type":      "access",
			"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
			"roles":     []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": guid}}}},
		})
	})

	t.Run("an API key deleted through node 3 is refused by node 1", func(t *testing.T) {
		// Node 1 has the key's token cached once this call succeeds.
		reader := client.New(n1.proc.url, readerKey)
		within(t, "the reader allowed on node 1", func() bool { return listKeys(reader) == nil })
		n3.admin.must("DELETE", client.Path("v1", "apikeys", created["id"].(string)), nil, nil)
		within(t, "the deleted API key's token refused on node 1", func() bool { return status(listKeys(reader)) == http.StatusUnauthorized })
		if _, err := client.New(n1.proc.url, readerKey).Token(context.Background()); err == nil {
			t.Fatal("node 1 exchanged the deleted API key for a token")
		}
	})

	t.Run("a console session works whichever node answers", func(t *testing.T) {
		// Cookies belong to a host, not a port: the browser sends the
		// session cookie node 1 set to nodes 2 and 3 as well, as it would
		// behind a load balancer.
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		get := func(n *clusterNode, path string) (*http.Response, string) {
			resp, err := hc.Get(n.proc.url + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		post := func(n *clusterNode, path string, form url.Values) *http.Response {
			resp, err := hc.PostForm(n.proc.url+path, form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		csrf := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)
		_, page := get(n1, "/console/signin")
		m := csrf.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token on node 1's sign-in page:\n%s", page)
		}
		if resp := post(n1, "/console/signin", url.Values{"csrf_token": {m[1]}, "apikey": {adminKey}, "next": {"/console/"}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in on node 1 answered %d", resp.StatusCode)
		}
		u, _ := url.Parse(n1.proc.url)
		var session *http.Cookie
		for _, c := range jar.Cookies(u) {
			if c.Name == "keyline_session" {
				session = c
			}
		}
		if session == nil {
			t.Fatal("no session cookie after signing in")
		}
		var token string
		for _, n := range nodes {
			resp, page := get(n, "/console/")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s answered %d to the session signed in on node 1 (Location %q)", n.id, resp.StatusCode, resp.Header.Get("Location"))
			}
			if m := csrf.FindStringSubmatch(page); m != nil {
				token = m[1]
			}
		}
		if resp := post(n3, "/console/signout", url.Values{"csrf_token": {token}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-out on node 3 answered %d", resp.StatusCode)
		}
		// Signed out on node 3, the cookie is no good on node 1 either,
		// even replayed.
		req, _ := http.NewRequest("GET", n1.proc.url+"/console/", nil)
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		resp, err := (&http.Client{CheckRedirect: hc.CheckRedirect}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/signin") {
			t.Fatalf("node 1 answered %d (Location %q) to a session signed out on node 3", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("every node lists the three", func(t *testing.T) {
		for _, n := range nodes {
			var list struct {
				Nodes []struct {
					ID     string `json:"id"`
					URL    string `json:"url"`
					Sealed bool   `json:"sealed"`
					Self   bool   `json:"self"`
				} `json:"nodes"`
			}
			if err := n.admin.do("GET", "/v1/cluster/nodes", nil, nil, &list); err != nil {
				t.Fatalf("%s: %v", n.id, err)
			}
			var ids []string
			for _, m := range list.Nodes {
				ids = append(ids, m.ID)
				if m.Sealed || m.Self != (m.ID == n.id) {
					t.Errorf("%s lists %+v", n.id, m)
				}
			}
			if strings.Join(ids, ",") != "node-1,node-2,node-3" {
				t.Fatalf("%s lists nodes %v, want node-1,node-2,node-3", n.id, ids)
			}
		}
		// A KMS reader is no account administrator.
		otherKey := n1.admin.must("POST", "/v1/apikeys", nil, map[string]any{"name": "cluster-reader-key-2", "iam_id": sid["iam_id"], "account_id": account})["apikey"].(string)
		reader := client.New(n2.proc.url, otherKey)
		if got := status(reader.Do(context.Background(), client.Request{Method: "GET", Path: "/v1/cluster/nodes"}, nil)); got != http.StatusForbidden {
			t.Fatalf("a KMS reader's GET /v1/cluster/nodes answered %d, want 403", got)
		}
		c := newCLI(t, n3.proc.url)
		c.must("login", "-a", n3.proc.url, "--apikey", adminKey)
		out := c.must("cluster", "nodes")
		for _, n := range nodes {
			if !strings.Contains(out, n.id) {
				t.Fatalf("keyline cluster nodes does not list %s:\n%s", n.id, out)
			}
		}
	})

	t.Run("a node that cannot read the change feed fails its health check", func(t *testing.T) {
		db, err := sql.Open("pgx", databaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// The feed's table goes away under the nodes, as if they could no
		// longer read it; it comes back at the end whatever happens.
		if _, err := db.Exec(`ALTER TABLE keyline_changes RENAME TO keyline_changes_away`); err != nil {
			t.Fatal(err)
		}
		restored := false
		restore := func() {
			if !restored {
				restored = true
				if _, err := db.Exec(`ALTER TABLE keyline_changes_away RENAME TO keyline_changes`); err != nil {
					t.Fatal(err)
				}
			}
		}
		defer restore()
		health := func(n *clusterNode) int {
			resp, err := http.Get(n.proc.url + "/healthz")
			if err != nil {
				return 0
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		for _, n := range nodes {
			within(t, n.id+" unhealthy", func() bool { return health(n) == http.StatusServiceUnavailable })
		}
		restore()
		for _, n := range nodes {
			within(t, n.id+" healthy again", func() bool { return health(n) == http.StatusOK })
		}
	})

	t.Run("an allowedIP policy set through node 1 refuses calls on node 3", func(t *testing.T) {
		// An instance of its own: once the policy excludes this host, not
		// even its administrator can reach the instance from here.
		fenced := n1.admin.createInstance("cluster-fenced", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
		n1.admin.createRootKey(fenced, "fenced-root")
		list := func(n *clusterNode) error {
			return n.admin.do("GET", "/api/v2/keys", kpHeader(fenced), nil, nil)
		}
		if err := list(n3); err != nil {
			t.Fatalf("node 3 lists the instance's keys: %v", err)
		}
		policy := map[string]any{
			"metadata": map[string]any{"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
			"resources": []any{map[string]any{"policy_type": "allowedIP",
				"policy_data": map[string]any{"enabled": true, "attributes": map[string]any{"allowed_ip": []string{"10.0.0.0/8"}}}}},
		}
		n1.admin.must("PUT", "/api/v2/instance/policies?policy=allowedIP", kpHeader(fenced), policy)
		within(t, "node 3 refusing calls from outside the allowed addresses", func() bool { return status(list(n3)) == http.StatusUnauthorized })
	})
}

// TestMasterKeyRotationReachesEveryNodeOnPostgreSQL: a master key rotation
// started through node 1 changes the keyring every node must hold. Node 2
// follows it through the change feed: a key created after the rotation
// (its material sealed under the new master key) wraps on node 2, and
// what was wrapped before still unwraps there.
func TestMasterKeyRotationReachesEveryNodeOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	shares := initShamirCluster(t, databaseURL)
	var nodes []*clusterNode
	for i := 1; i <= 2; i++ {
		n := startSealedNode(t, databaseURL, fmt.Sprintf("node-%d", i))
		unseal(t, n.admin.c, shares[:2]...)
		nodes = append(nodes, n)
	}
	n1, n2 := nodes[0], nodes[1]
	guid := n1.admin.createInstance("rot-cluster-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	before, _ := n1.admin.createRootKey(guid, "before-rotation")
	wrapOn := func(n *clusterNode, keyID string) (string, error) {
		var out map[string]any
		err := n.admin.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(guid), map[string]any{"plaintext": sealPlaintext}, &out)
		ct, _ := out["ciphertext"].(string)
		return ct, err
	}
	ct, err := wrapOn(n2, before)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := n1.admin.c.RotateMasterKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	var st client.RotationStatus
	waitFor(t, 2*time.Minute, "the rotation", func() bool {
		st, err = n1.admin.c.MasterKeyRotation(context.Background())
		return err == nil && st.State != "running"
	})
	if st.State != "completed" || len(st.KeyVersions) != 1 || st.KeyVersions[0] != 2 {
		t.Fatalf("rotation ended %+v", st)
	}

	after, _ := n1.admin.createRootKey(guid, "after-rotation")
	within(t, "node 2 wraps with a key sealed under the new master key", func() bool {
		_, err := wrapOn(n2, after)
		return err == nil
	})
	var out map[string]any
	if err := n2.admin.do("POST", client.Path("api", "v2", "keys", before, "actions", "unwrap"), kpHeader(guid), map[string]any{"ciphertext": ct}, &out); err != nil || out["plaintext"] != sealPlaintext {
		t.Fatalf("node 2 unwrapping what it wrapped before the rotation: %v %v", out["plaintext"], err)
	}
	if !strings.Contains(n2.proc.logs(), "master keys changed on another node") {
		t.Errorf("node 2 did not say it took the new master keys:\n%s", n2.proc.logs())
	}
}

// TestSealedNodeIsListedOnPostgreSQL: a node started sealed (Shamir
// shares) on the shared database is listed, by GET /v1/cluster/nodes on
// another node and by `keyline cluster nodes`, as sealed while it waits for
// its shares, and as unsealed once they are given.
func TestSealedNodeIsListedOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	shares := initShamirCluster(t, databaseURL)
	n1 := startSealedNode(t, databaseURL, "node-1")
	unseal(t, n1.admin.c, shares[:2]...)
	n2 := startSealedNode(t, databaseURL, "node-2")

	// listed says how node 1's API and its CLI list node 2.
	c := newCLI(t, n1.proc.url)
	c.must("login", "-a", n1.proc.url, "--apikey", adminKey)
	listed := func(sealed bool) bool {
		nodes, err := n1.admin.c.ClusterNodes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var api *client.ClusterNode
		for i := range nodes {
			if nodes[i].ID == n2.id {
				api = &nodes[i]
			}
		}
		if api == nil || api.Sealed != sealed || api.Self {
			return false
		}
		var cli struct{ Nodes []client.ClusterNode }
		if err := json.Unmarshal([]byte(c.must("cluster", "nodes", "--output", "json")), &cli); err != nil {
			t.Fatal(err)
		}
		for _, n := range cli.Nodes {
			if n.ID == n2.id {
				return n.Sealed == sealed
			}
		}
		return false
	}
	within(t, "node 1 lists node 2 as sealed", func() bool { return listed(true) })
	if st, err := n2.admin.c.SealStatus(context.Background()); err != nil || !st.Sealed {
		t.Fatalf("node 2's own seal status: %+v %v, want sealed", st, err)
	}

	unseal(t, n2.admin.c, shares[1:]...)
	within(t, "node 1 lists node 2 as unsealed", func() bool { return listed(false) })
}
