//go:build race

// Package race says whether the race detector is built in, for tests that
// count allocations: the detector's instrumentation allocates on its own.
package race

// Enabled is true when built with -race.
const Enabled = true
