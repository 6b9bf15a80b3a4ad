package kms

import "github.com/keyline/keyline/internal/seal"

// SealedColumns are the KMS columns sealed under the master key, for a
// master key rotation to re-seal.
var SealedColumns = []seal.SealedColumn{
	{Table: "kms_key_versions", Key: "id", Column: "material", AADColumns: []string{"key_id", "id"},
		AAD: func(c []string) []byte { return materialAAD(c[0], c[1]) }},
	{Table: "kms_import_tokens", Key: "instance_guid", Column: "private_key", AADColumns: []string{"instance_guid"},
		AAD: func(c []string) []byte { return importTokenAAD(c[0]) }},
}
