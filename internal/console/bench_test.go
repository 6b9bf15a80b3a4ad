package console_test

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
)

// BenchmarkKeysPage measures a Key Protect instance page with 20 keys:
// each view lists the keys, reads each key's rotation policy, lists the
// registrations and the instances, all through the APIs in process.
func BenchmarkKeysPage(b *testing.B) {
	k := startKeyline(b)
	kms := k.createKMS("bench-kp", "us-south")
	for i := range 20 {
		k.createKey(kms.GUID, "key-"+strconv.Itoa(i))
	}
	benchmarkPage(b, k, "/console/kms/"+kms.GUID)
}

// BenchmarkDashboard measures the resource list with 10 KMS instances.
func BenchmarkDashboard(b *testing.B) {
	k := startKeyline(b)
	for i := range 10 {
		k.createKMS("bench-kp-"+strconv.Itoa(i), "us-south")
	}
	benchmarkPage(b, k, "/console/")
}

func benchmarkPage(b *testing.B, k *keyline, path string) {
	hc := userAgent(b)
	_, page := fetch(b, hc, "GET", k.url+"/console/signin", nil)
	resp, _ := fetch(b, hc, "POST", k.url+"/console/signin", url.Values{"csrf_token": {csrfOf(b, page)}, "apikey": {keylineAdminKey}})
	if resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("sign-in: %d", resp.StatusCode)
	}
	b.ResetTimer()
	for b.Loop() {
		resp, err := hc.Get(k.url + path)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}
