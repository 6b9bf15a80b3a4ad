//go:build !cgo

package seal

import "errors"

// OpenPKCS11 needs cgo to load the module.
func OpenPKCS11(PKCS11Config, bool) (KeyWrapper, error) {
	return nil, errors.New("pkcs11 seal: this Keyline was built without PKCS#11 support (CGO_ENABLED=0); use a build with cgo")
}
