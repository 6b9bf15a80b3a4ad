package seal

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"github.com/keyline/keyline/internal/client"
)

// KMSConfig says which root key of a Key Protect-compatible service (IBM
// Key Protect, or another Keyline) wraps the master key. Everything but
// APIKey is recorded in the database; the API key never is.
type KMSConfig struct {
	URL        string `json:"url"`
	InstanceID string `json:"instance_id"`
	KeyID      string `json:"key_id"`
	APIKey     string `json:"-"`
}

// kmsWrapper calls the Key Protect v2 wrap and unwrap actions, with a
// token the API key is exchanged for at the service's /identity/token.
type kmsWrapper struct {
	cfg KMSConfig
	c   *client.Client
}

// OpenKMS checks the configuration; the first call reaches the service.
func OpenKMS(cfg KMSConfig) (KeyWrapper, error) {
	if cfg.URL == "" || cfg.InstanceID == "" || cfg.KeyID == "" {
		return nil, errors.New("kms seal: give the service URL, the instance ID and the root key ID")
	}
	if cfg.APIKey == "" {
		return nil, errors.New("kms seal: no API key: give --kms-api-key-file or set KEYLINE_KMS_API_KEY")
	}
	return &kmsWrapper{cfg: cfg, c: client.New(cfg.URL, cfg.APIKey)}, nil
}

func (w *kmsWrapper) action(ctx context.Context, action string, body map[string]any) (map[string]any, error) {
	body["aad"] = []string{string(masterKeyAAD)}
	var out map[string]any
	err := w.c.Do(ctx, client.Request{Method: http.MethodPost, Path: client.Path("api", "v2", "keys", w.cfg.KeyID, "actions", action),
		Header: map[string]string{"bluemix-instance": w.cfg.InstanceID}, Body: body}, &out)
	if err != nil {
		return nil, fmt.Errorf("kms seal: %s with root key %s of instance %s at %s: %w%s", action, w.cfg.KeyID, w.cfg.InstanceID, w.cfg.URL, err, w.keyState(ctx, err))
	}
	return out, nil
}

// keyStates are Key Protect's key states by number.
var keyStates = map[float64]string{0: "not active yet", 1: "active", 2: "disabled (suspended)", 3: "deactivated", 5: "destroyed"}

// keyState says, after a refusal for the key's state (409), which state
// the root key is in: "not in a valid state" alone does not tell an
// operator what to do.
func (w *kmsWrapper) keyState(ctx context.Context, err error) string {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusConflict {
		return ""
	}
	var out struct {
		Resources []struct {
			State float64 `json:"state"`
		} `json:"resources"`
	}
	if w.c.Do(ctx, client.Request{Method: http.MethodGet, Path: client.Path("api", "v2", "keys", w.cfg.KeyID),
		Header: map[string]string{"bluemix-instance": w.cfg.InstanceID}}, &out) != nil || len(out.Resources) == 0 {
		return ""
	}
	if st, ok := keyStates[out.Resources[0].State]; ok {
		return "; the root key is " + st
	}
	return ""
}

func (w *kmsWrapper) Wrap(ctx context.Context, key []byte) ([]byte, error) {
	out, err := w.action(ctx, "wrap", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(key)})
	if err != nil {
		return nil, err
	}
	ct, _ := out["ciphertext"].(string)
	if ct == "" {
		return nil, fmt.Errorf("kms seal: %s answered a wrap without a ciphertext", w.cfg.URL)
	}
	return []byte(ct), nil
}

func (w *kmsWrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	out, err := w.action(ctx, "unwrap", map[string]any{"ciphertext": string(wrapped)})
	if err != nil {
		return nil, err
	}
	pt, _ := out["plaintext"].(string)
	key, err := base64.StdEncoding.DecodeString(pt)
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("kms seal: %s unwrapped something that is not a master key", w.cfg.URL)
	}
	return key, nil
}

func (w *kmsWrapper) Close() error { return nil }
