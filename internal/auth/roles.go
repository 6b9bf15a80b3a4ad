package auth

import "strings"

// Role CRNs as IBM Cloud IAM names them; scripts and Terraform use these.
const (
	RoleReader                 = "crn:v1:bluemix:public:iam::::serviceRole:Reader"
	RoleReaderPlus             = "crn:v1:bluemix:public:iam::::serviceRole:ReaderPlus"
	RoleWriter                 = "crn:v1:bluemix:public:iam::::serviceRole:Writer"
	RoleManager                = "crn:v1:bluemix:public:iam::::serviceRole:Manager"
	RoleKeyPurge               = "crn:v1:bluemix:public:iam::::serviceRole:KeyPurge"
	RoleViewer                 = "crn:v1:bluemix:public:iam::::role:Viewer"
	RoleOperator               = "crn:v1:bluemix:public:iam::::role:Operator"
	RoleEditor                 = "crn:v1:bluemix:public:iam::::role:Editor"
	RoleAdministrator          = "crn:v1:bluemix:public:iam::::role:Administrator"
	RoleAuthorizationDelegator = "crn:v1:bluemix:public:iam::::role:AuthorizationDelegator"
)

// RoleCRN accepts a role CRN, a role name ("Reader") or a display name
// ("Authorization Delegator") and returns the role CRN, or "" if unknown.
func RoleCRN(s string) string {
	for _, crn := range allRoles {
		if s == crn || strings.EqualFold(s, RoleName(crn)) || strings.EqualFold(strings.ReplaceAll(s, " ", ""), RoleName(crn)) {
			return crn
		}
	}
	return ""
}

// RoleName is the short name of a role CRN ("Reader").
func RoleName(crn string) string {
	return crn[strings.LastIndexByte(crn, ':')+1:]
}

// RoleDisplayName is how the console and CLI show a role.
func RoleDisplayName(crn string) string {
	if crn == RoleAuthorizationDelegator {
		return "Authorization Delegator"
	}
	return RoleName(crn)
}

var allRoles = []string{RoleReader, RoleReaderPlus, RoleWriter, RoleManager, RoleKeyPurge, RoleViewer,
	RoleOperator, RoleEditor, RoleAdministrator, RoleAuthorizationDelegator}

// Actions, named as Activity Tracker names them so that the audit action and
// the authorized action are the same string.
const (
	// Key Protect.
	KMSKeyList            = "kms.secrets.list"
	KMSKeyHead            = "kms.secrets.head"
	KMSKeyRead            = "kms.secrets.read" // includes a standard key's payload
	KMSKeyReadMetadata    = "kms.secrets-metadata.read"
	KMSKeyVersionsList    = "kms.secrets-key-versions.list"
	KMSKeyCreate          = "kms.secrets.create"
	KMSKeyPatch           = "kms.secrets.patch"
	KMSKeyWrap            = "kms.secrets.wrap"
	KMSKeyUnwrap          = "kms.secrets.unwrap"
	KMSKeyRewrap          = "kms.secrets.rewrap"
	KMSKeyRotate          = "kms.secrets.rotate"
	KMSKeyEnable          = "kms.secrets.enable"
	KMSKeyDisable         = "kms.secrets.disable"
	KMSKeyDelete          = "kms.secrets.delete"
	KMSKeyRestore         = "kms.secrets.restore"
	KMSKeyPurge           = "kms.secrets.purge"
	KMSKeySetForDeletion  = "kms.secrets.setkeyfordeletion"
	KMSKeyUnsetDeletion   = "kms.secrets.unsetkeyfordeletion"
	KMSKeySync            = "kms.secrets.sync"
	KMSEventAck           = "kms.secrets-event.ack"
	KMSAliasCreate        = "kms.secrets-alias.create"
	KMSAliasDelete        = "kms.secrets-alias.delete"
	KMSPoliciesRead       = "kms.policies.read"
	KMSPoliciesWrite      = "kms.policies.write"
	KMSInstancePolRead    = "kms.instance-policies.read"
	KMSInstancePolWrite   = "kms.instance-policies.write"
	KMSKeyRingList        = "kms.key-rings.list"
	KMSKeyRingCreate      = "kms.key-rings.create"
	KMSKeyRingDelete      = "kms.key-rings.delete"
	KMSImportTokenCreate  = "kms.import-token.create"
	KMSImportTokenRead    = "kms.import-token.read"
	KMSRegistrationList   = "kms.registrations.list"
	KMSRegistrationCreate = "kms.registrations.create"
	KMSRegistrationWrite  = "kms.registrations.write"
	KMSRegistrationMerge  = "kms.registrations.merge"
	KMSRegistrationDelete = "kms.registrations.delete"

	// Resource controller (platform actions on any service's instances).
	InstanceRead   = "resource-controller.instance.retrieve"
	InstanceCreate = "resource-controller.instance.create"
	InstanceUpdate = "resource-controller.instance.update"
	InstanceDelete = "resource-controller.instance.delete"
	KeyCreate      = "resource-controller.key.create" // service credentials
	KeyRead        = "resource-controller.key.retrieve"
	KeyDelete      = "resource-controller.key.delete"

	// Activity Tracker: reading the account's audit events.
	AuditRead = "atracker.events.read"

	// IAM policy administration on a target service.
	PolicyRead  = "iam.policy.read"
	PolicyWrite = "iam.policy.update"

	// Event Streams data plane.
	TopicRead    = "messagehub.topic.read"
	TopicManage  = "messagehub.topic.manage"
	MessageRead  = "messagehub.message.read"
	MessageWrite = "messagehub.message.write"
	BackupCreate = "messagehub.backup.create"
	BackupRead   = "messagehub.backup.read"
)

var kmsReader = []string{KMSKeyList, KMSKeyHead, KMSKeyReadMetadata, KMSKeyVersionsList, KMSPoliciesRead,
	KMSInstancePolRead, KMSKeyRingList, KMSRegistrationList}
var kmsReaderPlus = append(append([]string(nil), kmsReader...), KMSKeyRead)
var kmsWriter = append(append([]string(nil), kmsReaderPlus...), KMSKeyCreate, KMSKeyPatch, KMSKeyWrap, KMSKeyUnwrap,
	KMSKeyRewrap, KMSKeyRotate, KMSAliasCreate, KMSAliasDelete, KMSImportTokenCreate, KMSImportTokenRead)
var kmsManager = append(append([]string(nil), kmsWriter...), KMSKeyEnable, KMSKeyDisable, KMSKeyDelete, KMSKeyRestore,
	KMSKeySetForDeletion, KMSKeyUnsetDeletion, KMSKeySync, KMSPoliciesWrite, KMSInstancePolWrite, KMSKeyRingCreate,
	KMSKeyRingDelete)

// kmsServiceReader is what a service-to-service Reader authorization lets a
// source service (messagehub, is) do on the target key: use it to wrap and
// unwrap its data keys, register the resources it protects, and acknowledge
// key lifecycle events.
var kmsServiceReader = []string{KMSKeyReadMetadata, KMSKeyList, KMSKeyWrap, KMSKeyUnwrap, KMSKeyRewrap,
	KMSRegistrationList, KMSRegistrationCreate, KMSRegistrationWrite, KMSRegistrationMerge, KMSRegistrationDelete, KMSEventAck}

var streamsReader = []string{TopicRead, MessageRead, BackupRead}
var streamsWriter = append(append([]string(nil), streamsReader...), MessageWrite)
var streamsManager = append(append([]string(nil), streamsWriter...), TopicManage, BackupCreate)

var platformViewer = []string{InstanceRead, KeyRead, AuditRead}
var platformEditor = append(append([]string(nil), platformViewer...), InstanceCreate, InstanceUpdate, InstanceDelete, KeyCreate, KeyDelete)
var platformAdmin = append(append([]string(nil), platformEditor...), PolicyRead, PolicyWrite)

// AccessActions is what an access policy granting role on a resource of
// service lets its subject do.
func AccessActions(service, role string) []string {
	switch role {
	case RoleViewer, RoleOperator:
		return platformViewer
	case RoleEditor:
		return platformEditor
	case RoleAdministrator:
		return platformAdmin
	}
	switch service {
	case "kms":
		switch role {
		case RoleReader:
			return kmsReader
		case RoleReaderPlus:
			return kmsReaderPlus
		case RoleWriter:
			return kmsWriter
		case RoleManager:
			return kmsManager
		case RoleKeyPurge:
			return []string{KMSKeyPurge}
		}
	case "messagehub":
		switch role {
		case RoleReader:
			return streamsReader
		case RoleWriter:
			return streamsWriter
		case RoleManager:
			return streamsManager
		}
	}
	return nil
}

// AuthorizationActions is what a service-to-service authorization granting
// role on target service lets the source service do.
func AuthorizationActions(target, role string) []string {
	if target == "kms" && role == RoleReader {
		return kmsServiceReader
	}
	return nil
}

// Allows reports whether one of actions is action.
func Allows(actions []string, action string) bool {
	for _, a := range actions {
		if a == action {
			return true
		}
	}
	return false
}
