package client

import (
	"context"
	"encoding/json"
	"errors"
)

// SealStatus is GET /v1/sys/seal-status (Vault's shape).
type SealStatus struct {
	Type        string `json:"type"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	T           int    `json:"t"`
	N           int    `json:"n"`
	Progress    int    `json:"progress"`
}

// SealStatus needs no credentials.
func (c *Client) SealStatus(ctx context.Context) (SealStatus, error) {
	var st SealStatus
	err := c.Do(ctx, Request{Method: "GET", Path: "/v1/sys/seal-status", Anonymous: true}, &st)
	return st, sysError(err, &st)
}

// Unseal gives one unseal key share (reset first discards those given so
// far). The shares are the credential: no API key is sent. On a refused
// share the status still says the progress kept.
func (c *Client) Unseal(ctx context.Context, share string, reset bool) (SealStatus, error) {
	var st SealStatus
	err := c.Do(ctx, Request{Method: "POST", Path: "/v1/sys/unseal", Anonymous: true,
		Body: map[string]any{"key": share, "reset": reset}}, &st)
	return st, sysError(err, &st)
}

// Seal seals the server at once (an account administrator's API key).
func (c *Client) Seal(ctx context.Context) (SealStatus, error) {
	var st SealStatus
	err := c.Do(ctx, Request{Method: "POST", Path: "/v1/sys/seal"}, &st)
	return st, sysError(err, &st)
}

// sysError reads Vault's {"errors": [...]} body of the /v1/sys APIs, and
// the seal status an unseal error carries.
func sysError(err error, st *SealStatus) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	var body struct {
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(e.Body, &body) == nil && len(body.Errors) > 0 {
		e.Message = body.Errors[0]
		json.Unmarshal(e.Body, st)
	}
	return e
}
