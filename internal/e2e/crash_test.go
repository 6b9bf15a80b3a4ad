package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// TestKillDuringRotationsLosesNothing kills `keyline serve` with SIGKILL in
// the middle of a stream of rotations, restarts it, and checks that every
// acknowledged rotation survived, no key is half rotated, every version
// still unwraps, and every rotation that happened has its audit event.
func TestKillDuringRotationsLosesNothing(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, dir)
	admin := &api{t: t, c: client.New(p.url, adminKey)}
	kp := admin.createInstance("crash-kp", "kms", "tiered-pricing", "us-south", nil)
	guid := kp["guid"].(string)

	const keys = 60
	ids := make([]string, keys)
	wrapped := make([]string, keys)
	for i := range ids {
		ids[i], _ = admin.createRootKey(guid, fmt.Sprintf("crash-%d", i))
		out := admin.must("POST", client.Path("api", "v2", "keys", ids[i], "actions", "wrap"), kpHeader(guid), map[string]any{"plaintext": "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY="})
		wrapped[i] = out["ciphertext"].(string)
	}

	// Rotate every key once, from four workers, and kill the server midway.
	var mu sync.Mutex
	acked := map[string]bool{}
	var wg sync.WaitGroup
	next := make(chan string)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				err := admin.do("POST", client.Path("api", "v2", "keys", id, "actions", "rotate"), kpHeader(guid), map[string]any{}, nil)
				if err == nil {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}
		}()
	}
	killed := make(chan struct{})
	go func() {
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= keys/3 {
				p.kill()
				close(killed)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for _, id := range ids {
		select {
		case next <- id:
		case <-killed:
		}
	}
	close(next)
	wg.Wait()
	<-killed
	if len(acked) == 0 || len(acked) == keys {
		t.Fatalf("the kill came at a useless moment (%d of %d rotations acknowledged)", len(acked), keys)
	}

	p2 := serveProcess(t, dir)
	admin = &api{t: t, c: client.New(p2.url, adminKey)}
	rotated := map[string]bool{}
	for i, id := range ids {
		meta := admin.must("GET", client.Path("api", "v2", "keys", id, "metadata"), kpHeader(guid), nil)
		key := meta["resources"].([]any)[0].(map[string]any)
		versions := admin.must("GET", client.Path("api", "v2", "keys", id, "versions"), kpHeader(guid), nil)
		vs := versions["resources"].([]any)
		latest := vs[0].(map[string]any)["id"]
		if key["keyVersion"].(map[string]any)["id"] != latest {
			t.Errorf("key %s: metadata version %v is not the newest version %v (half rotated)", id, key["keyVersion"], latest)
		}
		switch len(vs) {
		case 1:
			if acked[id] {
				t.Errorf("key %s: an acknowledged rotation was lost", id)
			}
		case 2:
			rotated[id] = true
			if _, ok := key["lastRotateDate"]; !ok {
				t.Errorf("key %s has two versions but no lastRotateDate", id)
			}
		default:
			t.Errorf("key %s has %d versions after one rotation", id, len(vs))
		}
		out := admin.must("POST", client.Path("api", "v2", "keys", id, "actions", "unwrap"), kpHeader(guid), map[string]any{"ciphertext": wrapped[i]})
		if out["plaintext"] != "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY=" {
			t.Errorf("key %s: the ciphertext from before the crash no longer unwraps", id)
		}
	}
	// Every rotation that happened has exactly its event, and no other.
	events := map[string]int{}
	q := url.Values{"action": {"kms.secrets.rotate"}, "outcome": {"success"}, "limit": {"500"}}
	page := admin.must("GET", "/v1/audit/events?"+q.Encode(), nil, nil)
	for _, ev := range page["events"].([]any) {
		target := ev.(map[string]any)["target"].(map[string]any)["id"].(string)
		events[target[strings.LastIndexByte(target, ':')+1:]]++
	}
	for _, id := range ids {
		want := 0
		if rotated[id] {
			want = 1
		}
		if events[id] != want {
			t.Errorf("key %s: %d rotate events, want %d", id, events[id], want)
		}
	}
	t.Logf("%d rotations acknowledged before the kill, %d present after restart", len(acked), len(rotated))
}
