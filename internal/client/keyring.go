package client

import "context"

// RotationStatus is GET /v1/sys/rotate-master-key.
type RotationStatus struct {
	State           string   `json:"state"`
	FromVersion     uint32   `json:"from_version"`
	ToVersion       uint32   `json:"to_version"`
	Done            int64    `json:"done"`
	Total           int64    `json:"total"`
	ProgressPercent int      `json:"progress_percent"`
	Reason          string   `json:"reason"`
	StartedAt       string   `json:"started_at"`
	FinishedAt      string   `json:"finished_at"`
	KeyVersions     []uint32 `json:"key_versions"`
}

// RotateMasterKey starts a master key rotation (or resumes a failed one)
// and returns at once (an account administrator's API key).
func (c *Client) RotateMasterKey(ctx context.Context) (RotationStatus, error) {
	var st RotationStatus
	err := c.Do(ctx, Request{Method: "POST", Path: "/v1/sys/rotate-master-key"}, &st)
	return st, sysError(err, &SealStatus{})
}

// MasterKeyRotation is the last rotation's progress.
func (c *Client) MasterKeyRotation(ctx context.Context) (RotationStatus, error) {
	var st RotationStatus
	err := c.Do(ctx, Request{Method: "GET", Path: "/v1/sys/rotate-master-key"}, &st)
	return st, sysError(err, &SealStatus{})
}

// Rekey replaces the unseal key shares: shares are the threshold of the
// current ones; the new ones come back, once.
func (c *Client) Rekey(ctx context.Context, shares []string, newShares, newThreshold int) ([]string, error) {
	var out struct {
		Keys []string `json:"keys_b64"`
	}
	err := c.Do(ctx, Request{Method: "POST", Path: "/v1/sys/rekey",
		Body: map[string]any{"keys": shares, "secret_shares": newShares, "secret_threshold": newThreshold}}, &out)
	return out.Keys, sysError(err, &SealStatus{})
}
