package rcapi

import (
	"net/http"
	"testing"
)

// BenchmarkCreateInstance measures a create over HTTP: decoding, the
// provisioning record, the broker call, and the final record with its audit
// event (two write transactions, fsynced).
func BenchmarkCreateInstance(b *testing.B) {
	e := newEnv(b)
	body := map[string]any{"name": "bench", "target": "us-south", "resource_plan_id": esPlan}
	for b.Loop() {
		e.do("alice", "POST", "/v2/resource_instances", body).want(b, http.StatusCreated)
	}
}

// BenchmarkGetInstance measures a read by CRN over HTTP, with its authorization.
func BenchmarkGetInstance(b *testing.B) {
	e := newEnv(b)
	crn := e.createInstance("bench", esPlan, nil).str("crn")
	for b.Loop() {
		e.do("alice", "GET", "/v2/resource_instances/"+escaped(crn), nil).want(b, http.StatusOK)
	}
}
