package streams

// What the tests of package streams_test use of this package's test
// harness: they run deployments over the real KMS and IAM, whose adapters
// live in internal/server, which this package's own tests cannot import.
var (
	StartService    = startService
	RealCredentials = realCredentials
	NewInstance     = newInstance
	NewClient       = newClient
	CreateTopic     = createTopic
	ProduceN        = produceN
	ConsumeAll      = consumeAll
	Eventually      = eventually
	TestCtx         = testCtx
	MustSeal        = mustSeal
)

const (
	ActionStorageKeyRead   = actionStorageKeyRead
	ActionStorageKeyUpdate = actionStorageKeyUpdate
)

type (
	TestTasks  = testTasks
	TestStates = testStates
)

// FirstCompleted says whether the first task started has completed.
func (t *testTasks) FirstCompleted() bool {
	all := t.all()
	if len(all) == 0 {
		return false
	}
	status, _ := all[0].status()
	return status == "completed"
}
