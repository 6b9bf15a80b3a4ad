package iam

import "github.com/keyline/keyline/internal/seal"

// SealedColumns are the IAM columns sealed under the master key, for a
// master key rotation to re-seal.
var SealedColumns = []seal.SealedColumn{
	{Table: "iam_signing_keys", Key: "kid", Column: "sealed", AADColumns: []string{"kid"},
		AAD: func(c []string) []byte { return signingKeyAAD(c[0]) }},
}
