package streams

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/keyline/keyline/internal/auth"
)

// TestPlansLimitTopics: a deployment shows its plan's limits and its
// broker enforces them; Enterprise's are larger than Standard's.
func TestPlansLimitTopics(t *testing.T) {
	h := newHarness(t)
	ten := "10485760"
	for _, tt := range []struct {
		plan           string
		wantPartitions int32
		bigTopic       error // a topic of 101 partitions
		bigMessages    error // max.message.bytes of 10 MiB
	}{
		{"standard", 100, kerr.PolicyViolation, kerr.InvalidConfig},
		{"eventstreams-gen2-enterprise", 3000, nil, nil},
	} {
		t.Run(tt.plan, func(t *testing.T) {
			inst := newInstance()
			inst.Plan = tt.plan
			if _, err := h.svc.Provision(context.Background(), inst, nil); err != nil {
				t.Fatal(err)
			}
			info, err := h.svc.Deployment(context.Background(), inst.GUID)
			if err != nil {
				t.Fatal(err)
			}
			if info.PlanLimits.MaxPartitions != tt.wantPartitions {
				t.Fatalf("plan limits %+v, want %d partitions", info.PlanLimits, tt.wantPartitions)
			}
			adm := kadm.NewClient(h.client(inst, auth.RoleManager))
			check := func(what string, want error, partitions int32, configs map[string]*string, topic string) {
				t.Helper()
				r, err := adm.CreateTopic(testCtx(t), partitions, 3, configs, topic)
				if err == nil {
					err = r.Err
				}
				if want == nil && err != nil || want != nil && !errors.Is(err, want) {
					t.Fatalf("%s: %v (%s), want %v", what, err, r.ErrMessage, want)
				}
				if want != nil && r.ErrMessage == "" || strings.Contains(r.ErrMessage, "%!") {
					t.Fatalf("%s: refusal without a clear message: %q", what, r.ErrMessage)
				}
			}
			check("101 partitions", tt.bigTopic, 101, nil, "wide")
			check("10 MiB messages", tt.bigMessages, 1, map[string]*string{"max.message.bytes": &ten}, "large")
		})
	}
}
