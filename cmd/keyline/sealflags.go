package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/keyline/keyline/internal/server"
)

// unsealSecretFlags are where the PIN of a pkcs11 seal and the API key of
// a kms seal come from: a file, or else the environment, never an
// argument (it would show in process lists).
type unsealSecretFlags struct {
	pinFile, apiKeyFile string
}

// register adds the flags, their names after prefix ("" or "from-").
func (u *unsealSecretFlags) register(f *pflag.FlagSet, prefix, whose string) {
	f.StringVar(&u.pinFile, prefix+"pkcs11-pin-file", "", "file holding the PIN of "+whose+" pkcs11 seal's token [$KEYLINE_PKCS11_PIN holds the PIN itself]")
	f.StringVar(&u.apiKeyFile, prefix+"kms-api-key-file", "", "file holding the API key "+whose+" kms seal calls its Key Protect service with [$KEYLINE_KMS_API_KEY holds the key itself]")
}

func (u *unsealSecretFlags) secrets() (server.UnsealSecrets, error) {
	pin, err := secretFrom(u.pinFile, "KEYLINE_PKCS11_PIN")
	if err != nil {
		return server.UnsealSecrets{}, err
	}
	apikey, err := secretFrom(u.apiKeyFile, "KEYLINE_KMS_API_KEY")
	return server.UnsealSecrets{PKCS11PIN: pin, KMSAPIKey: apikey}, err
}

// secretFrom reads a secret from file (its first line), or else from the
// environment variable env.
func secretFrom(file, env string) (string, error) {
	if file == "" {
		return os.Getenv(env), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the secret file: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimSpace(line), nil
}

// sealTargetFlags choose the seal of `operator init` and `operator migrate`.
type sealTargetFlags struct {
	t      server.SealTarget
	slot   int
	unseal unsealSecretFlags // the target's own PIN or API key
}

func (s *sealTargetFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.t.Mode, "seal", server.SealShamir, "the seal: shamir (shares for operators), pkcs11 (an HSM key), or kms (a Key Protect root key)")
	f.IntVar(&s.t.Shares, "key-shares", 5, "shamir: how many unseal key shares to make")
	f.IntVar(&s.t.Threshold, "key-threshold", 3, "shamir: how many shares unseal the server")
	f.StringVar(&s.t.PKCS11.Module, "pkcs11-module", "", "pkcs11: the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so)")
	f.StringVar(&s.t.PKCS11.TokenLabel, "pkcs11-token-label", "", "pkcs11: the label of the token (or give --pkcs11-slot)")
	f.IntVar(&s.slot, "pkcs11-slot", -1, "pkcs11: the slot number of the token, instead of its label")
	f.StringVar(&s.t.PKCS11.KeyLabel, "pkcs11-key-label", "keyline-master", "pkcs11: the label of the AES key that wraps the master key; generated in the token when absent")
	f.StringVar(&s.t.KMS.URL, "kms-url", "", "kms: the base URL of the Key Protect-compatible service (another Keyline, or IBM Key Protect)")
	f.StringVar(&s.t.KMS.InstanceID, "kms-instance", "", "kms: the service's instance ID (its bluemix-instance header)")
	f.StringVar(&s.t.KMS.KeyID, "kms-key-id", "", "kms: the ID of the root key that wraps the master key")
	s.unseal.register(f, "", "the new")
}

// target is the seal asked for, with its secrets.
func (s *sealTargetFlags) target(f *pflag.FlagSet) (server.SealTarget, error) {
	t := s.t
	switch t.Mode {
	case server.SealShamir:
		if t.Threshold < 2 || t.Shares < t.Threshold || t.Shares > 255 {
			return t, usageError{fmt.Errorf("want 2 <= --key-threshold <= --key-shares <= 255")}
		}
	case server.SealPKCS11:
		if f.Changed("pkcs11-slot") {
			slot := s.slot
			t.PKCS11.Slot = &slot
		}
		if t.PKCS11.Module == "" || (t.PKCS11.TokenLabel == "") == (t.PKCS11.Slot == nil) {
			return t, usageError{fmt.Errorf("--seal pkcs11 needs --pkcs11-module and one of --pkcs11-token-label or --pkcs11-slot")}
		}
	case server.SealKMS:
		if t.KMS.URL == "" || t.KMS.InstanceID == "" || t.KMS.KeyID == "" {
			return t, usageError{fmt.Errorf("--seal kms needs --kms-url, --kms-instance and --kms-key-id")}
		}
	default:
		return t, usageError{fmt.Errorf("--seal %s is not a seal: use shamir, pkcs11 or kms", t.Mode)}
	}
	sec, err := s.unseal.secrets()
	t.PKCS11.PIN, t.KMS.APIKey = sec.PKCS11PIN, sec.KMSAPIKey
	return t, err
}
