//go:build !cgo

package seal

import (
	"strings"
	"testing"
)

func TestPKCS11NeedsCgo(t *testing.T) {
	_, err := OpenPKCS11(PKCS11Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "t", KeyLabel: "k", PIN: "1"}, true)
	if err == nil || !strings.Contains(err.Error(), "built without PKCS#11 support") {
		t.Fatalf("OpenPKCS11 without cgo: %v", err)
	}
}
