package kms

import "github.com/keyline/keyline/internal/store"

// migrations are the KMS tables. Key material lives only in key_versions.material
// and import_tokens.private_key, always sealed under the master key.
var migrations = []store.Migration{{ID: "kms/0001", SQL: `
CREATE TABLE kms_instances (
	guid TEXT PRIMARY KEY,
	crn TEXT NOT NULL,
	account_id TEXT NOT NULL,
	region TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE TABLE kms_keys (
	id TEXT PRIMARY KEY,
	instance_guid TEXT NOT NULL,
	name TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	tags TEXT NOT NULL DEFAULT '[]',
	extractable INTEGER NOT NULL,
	imported INTEGER NOT NULL,
	key_ring TEXT NOT NULL,
	state INTEGER NOT NULL,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	last_update_date TEXT NOT NULL DEFAULT '',
	last_rotate_date TEXT NOT NULL DEFAULT '',
	expiration_date TEXT NOT NULL DEFAULT '',
	deleted_by TEXT NOT NULL DEFAULT '',
	deletion_date TEXT NOT NULL DEFAULT '',
	dual_auth INTEGER NOT NULL DEFAULT 0,
	dual_auth_set_by TEXT NOT NULL DEFAULT '',
	dual_auth_expires TEXT NOT NULL DEFAULT '',
	latest_version TEXT NOT NULL,
	last_lifecycle_at TEXT NOT NULL DEFAULT '',
	last_event_type TEXT NOT NULL DEFAULT ''
);
CREATE INDEX kms_keys_instance ON kms_keys (instance_guid, id);
CREATE TABLE kms_key_versions (
	id TEXT PRIMARY KEY,
	key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,
	seq INTEGER NOT NULL,
	material BLOB NOT NULL,
	creation_date TEXT NOT NULL,
	UNIQUE (key_id, seq)
);
CREATE TABLE kms_aliases (
	instance_guid TEXT NOT NULL,
	alias TEXT NOT NULL,
	key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	PRIMARY KEY (instance_guid, alias)
);
CREATE INDEX kms_aliases_key ON kms_aliases (key_id);
CREATE TABLE kms_key_rings (
	instance_guid TEXT NOT NULL,
	id TEXT NOT NULL,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	PRIMARY KEY (instance_guid, id)
);
CREATE TABLE kms_key_policies (
	key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,
	policy_type TEXT NOT NULL,
	id TEXT NOT NULL,
	enabled INTEGER NOT NULL,
	interval_month INTEGER NOT NULL DEFAULT 0,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	last_update_date TEXT NOT NULL,
	PRIMARY KEY (key_id, policy_type)
);
CREATE TABLE kms_instance_policies (
	instance_guid TEXT NOT NULL,
	policy_type TEXT NOT NULL,
	data TEXT NOT NULL,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	last_updated TEXT NOT NULL,
	PRIMARY KEY (instance_guid, policy_type)
);
CREATE TABLE kms_registrations (
	key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,
	resource_crn TEXT NOT NULL,
	instance_guid TEXT NOT NULL,
	service TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	metadata TEXT NOT NULL DEFAULT '',
	prevent_key_deletion INTEGER NOT NULL DEFAULT 0,
	key_version_id TEXT NOT NULL,
	created_by TEXT NOT NULL,
	creation_date TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	last_updated TEXT NOT NULL,
	PRIMARY KEY (key_id, resource_crn)
);
CREATE INDEX kms_registrations_instance ON kms_registrations (instance_guid, resource_crn);
CREATE TABLE kms_key_events (
	id TEXT PRIMARY KEY,
	seq INTEGER NOT NULL,
	service TEXT NOT NULL,
	type TEXT NOT NULL,
	instance_guid TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_crn TEXT NOT NULL,
	key_version_id TEXT NOT NULL,
	key_version_date TEXT NOT NULL,
	resource_crns TEXT NOT NULL,
	correlation_id TEXT NOT NULL,
	created_at TEXT NOT NULL,
	acked_at TEXT NOT NULL DEFAULT '',
	ack_state TEXT NOT NULL DEFAULT ''
);
CREATE INDEX kms_key_events_pending ON kms_key_events (service, acked_at, seq);
CREATE TABLE kms_import_tokens (
	instance_guid TEXT PRIMARY KEY,
	private_key BLOB NOT NULL,
	public_key TEXT NOT NULL,
	nonce BLOB NOT NULL,
	creation_date TEXT NOT NULL,
	expiration_date TEXT NOT NULL,
	max_retrievals INTEGER NOT NULL,
	remaining INTEGER NOT NULL
)`}}
