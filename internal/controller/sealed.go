package controller

import "github.com/keyline/keyline/internal/seal"

// SealedColumns are the controller's columns sealed under the master key
// (service credentials kept to be viewed again), for a master key rotation
// to re-seal.
var SealedColumns = []seal.SealedColumn{
	{Table: "rc_resource_keys", Key: "guid", Column: "sealed_credentials", Where: "sealed_credentials <> ''",
		AADColumns: []string{"crn"}, AAD: func(c []string) []byte { return []byte(c[0]) }, Base64: true},
}
