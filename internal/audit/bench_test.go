package audit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/store"
)

// wrapEvent is the event of one wrap call as the KMS records it.
func wrapEvent(ctx context.Context) *Event {
	ev := NewEvent(ctx, "kms.secrets.wrap", Target{ID: keyTarget("66c6b928-16a7-4477-9bba-17d956403772").ID, Name: "bench-root", TypeURI: "kms/secret"}, Success, 200)
	ev.RequestData["instanceID"] = "b3c1d2e3-0000-4000-8000-00000000beef"
	ev.RequestData["keyRingId"] = "default"
	ev.ResponseData = map[string]any{"keyId": "66c6b928-16a7-4477-9bba-17d956403772", "keyVersionId": "7b28e99d-501f-4e3c-ae3c-16f434dd72dd"}
	return ev
}

func benchContext() context.Context {
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: "IBMid-915C6337C8BA", Name: "admin", AccountID: acct, Type: auth.User, CredentialType: "token"})
	// The request info comes from the HTTP edge, as in a real call.
	var reqCtx context.Context
	h := httpapi.Middleware(nil, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { reqCtx = r.Context() }))
	r := httptest.NewRequest(http.MethodPost, "/api/v2/keys/66c6b928-16a7-4477-9bba-17d956403772/actions/wrap", nil).WithContext(ctx)
	r.Header.Set("User-Agent", "Go-http-client/1.1")
	r.Header.Set("Correlation-Id", "bench-0-747")
	h.ServeHTTP(httptest.NewRecorder(), r)
	return reqCtx
}

// BenchmarkRecordParallel measures group-committed Record calls from many
// concurrent callers, the audit cost of every wrap and unwrap.
func BenchmarkRecordParallel(b *testing.B) {
	db, err := store.OpenSQLite(context.Background(), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	l, err := New(context.Background(), db, clock.Real{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { l.Close(); db.Close() }()
	ctx := benchContext()
	b.SetParallelism(8)
	b.ReportAllocs()
	start, cpu := time.Now(), processCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Record(ctx, wrapEvent(ctx)); err != nil {
				b.Error(err)
			}
		}
	})
	// Indexed too: what the events cost in all.
	if _, err := l.Query(ctx, Filter{AccountID: acct, Limit: 1}); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	b.ReportMetric(float64((processCPU()-cpu).Microseconds())/float64(b.N), "cpu-µs/event")
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEventRow measures what each Record caller does before queueing:
// completing the event and encoding its row.
func BenchmarkEventRow(b *testing.B) {
	l := &Log{clock: clock.Real{}}
	ctx := benchContext()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.row(wrapEvent(ctx)); err != nil {
			b.Fatal(err)
		}
	}
}
