package backup

import (
	"context"
	"testing"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/iam/iamtest"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams"
)

// noDeployments is a data plane without deployments.
type noDeployments struct{}

func (noDeployments) Deployment(ctx context.Context, guid string) (streams.DeploymentInfo, error) {
	return streams.DeploymentInfo{}, errNoBackup("test")
}
func (noDeployments) Deployments(ctx context.Context, account string) ([]streams.DeploymentInfo, error) {
	return nil, nil
}
func (noDeployments) ReadLog(ctx context.Context, guid string, f func(archive.Log) error) error {
	return errNoBackup("test")
}

// unusedKeys stands for the KMS and IAM where no test of this file reaches
// them (no backup here is sealed under a root key): a call fails the test
// with a panic of the nil interface.
type unusedKeys struct {
	streams.KeyService
	Delegation
}

func newService(t *testing.T, env *iamtest.Env) *Service {
	t.Helper()
	ctx := context.Background()
	ctl, err := controller.New(ctx, controller.Config{DB: env.DB, Audit: env.Audit, Clock: env.Clock, Authorizer: env.Service})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(ctx, Config{DB: env.DB, Audit: env.Audit, Clock: env.Clock, Keys: unusedKeys{},
		Delegation: unusedKeys{}, Deployments: noDeployments{}, Controller: ctl, Authorizer: env.Service,
		MasterKey: env.Master, Volumes: VolumeConfig{DataDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

// TestBackupsInterruptedByARestartAreFailed: a backup the process was
// taking when it stopped is failed on the next start, saying so; a
// finished one is left as it is.
func TestBackupsInterruptedByARestartAreFailed(t *testing.T) {
	env := iamtest.New(t)
	ctx := context.Background()
	newService(t, env)
	now := env.Clock.Now()
	for _, b := range []*Backup{
		{ID: "b-running", CRN: "crn:running", Status: StatusRunning, Type: TypeScheduled, CreatedAt: now},
		{ID: "b-done", CRN: "crn:done", Status: StatusCompleted, Type: TypeOnDemand, CreatedAt: now, FinishedAt: now, Size: 10},
	} {
		b.DeploymentGUID, b.SealedBy = "dep-1", sealedByMaster
		if err := env.DB.Tx(ctx, func(tx *store.Tx) error { return insertBackup(tx, b) }); err != nil {
			t.Fatal(err)
		}
	}
	svc := newService(t, env)
	running, err := svc.load(ctx, "test", "b-running")
	if err != nil {
		t.Fatal(err)
	}
	if running.Status != StatusFailed || running.Reason == "" || running.FinishedAt.IsZero() {
		t.Fatalf("the interrupted backup: %+v", running)
	}
	done, err := svc.load(ctx, "test", "crn:done")
	if err != nil || done.Status != StatusCompleted || done.Reason != "" {
		t.Fatalf("the finished backup: %+v, %v", done, err)
	}
}
