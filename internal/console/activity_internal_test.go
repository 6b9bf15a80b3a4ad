package console

import "testing"

func TestActivityNamesServiceInitiatorsForPeople(t *testing.T) {
	for _, tc := range []struct{ id, name, want string }{
		{"is", "", "Block Storage for VPC (is)"},
		{"messagehub", "messagehub", "Event Streams (messagehub)"},
		{"IBMid-1", "admin", "admin"},
		{"iam-ServiceId-1", "", "iam-ServiceId-1"},
	} {
		var e event
		e.Initiator.ID, e.Initiator.Name = tc.id, tc.name
		if got := e.Who(); got != tc.want {
			t.Errorf("initiator %q/%q shows as %q, want %q", tc.id, tc.name, got, tc.want)
		}
	}
}

func TestStateReasonsReadAsSentences(t *testing.T) {
	for in, want := range map[string]string{
		"the deployment is locked: its key is disabled": "The deployment is locked: its key is disabled.",
		"Already a sentence.":                           "Already a sentence.",
		"":                                              "",
	} {
		if got := sentence(in); got != want {
			t.Errorf("sentence(%q) = %q, want %q", in, got, want)
		}
	}
}
