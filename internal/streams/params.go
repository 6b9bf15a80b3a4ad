package streams

import (
	"fmt"
	"slices"
	"strings"

	"github.com/keyline/keyline/internal/errs"
)

// paramAliases are other names users give the key parameters: the Cloud
// Databases documentation calls the disk key "disk_encryption_key" in its
// prose while its examples say "disk_encryption_key_crn".
var paramAliases = map[string]string{
	"disk_encryption_key":   ParamDiskKey,
	"backup_encryption_key": ParamBackupKey,
}

// knownParams are the provision parameters a deployment understands.
var knownParams = []string{ParamDiskKey, ParamBackupKey, ParamBackupSchedule, ParamBackupID, ParamIAMTokenOnly}

// CheckParameters returns a deployment's provision parameters under their
// canonical names, or an error naming the first one it does not know. An
// unknown parameter is refused rather than ignored: a misspelt key
// parameter would otherwise give a deployment encrypted with a
// service-managed key while its owner believes it uses theirs.
func CheckParameters(params map[string]any) (map[string]any, error) {
	const op = "streams.CheckParameters"
	out := make(map[string]any, len(params))
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names) // the same request always gets the same error
	for _, name := range names {
		canonical := name
		if to, ok := paramAliases[name]; ok {
			canonical = to
		}
		if !slices.Contains(knownParams, canonical) {
			return nil, errs.Ef(op, errs.Invalid, "UNKNOWN_PARAMETER", "%q is not a parameter of Event Streams deployments; they take %s",
				name, strings.Join(knownParams, ", ")).On("field", "parameters."+name)
		}
		v := params[name]
		if old, ok := out[canonical]; ok && fmt.Sprint(old) != fmt.Sprint(v) {
			return nil, errs.Ef(op, errs.Invalid, "CONFLICTING_PARAMETER", "%s is given twice with different values (also as %s)", canonical, name).On("field", "parameters."+name)
		}
		out[canonical] = v
	}
	return out, nil
}
