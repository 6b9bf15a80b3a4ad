package server

import (
	"os"
	"strings"
	"testing"
)

func TestParsePublicURL(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"https://keyline.example.com:8443", "https://keyline.example.com:8443", ""},
		{"http://10.0.0.5:8080/", "http://10.0.0.5:8080", ""},
		{"keyline.example.com:8443", "", "give the scheme"},
		{"ftp://keyline.example.com", "", "give the scheme"},
		{"https://", "", "give the scheme"},
		{"https://keyline.example.com/api", "", "give the scheme"},
		{"https://user:pw@keyline.example.com", "", "give the scheme"},
		{"https://keyline.example.com/?x=1", "", "give the scheme"},
	} {
		got, err := ParsePublicURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParsePublicURL(%q) = %q, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParsePublicURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestReachableHostReplacesWildcards(t *testing.T) {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	for in, want := range map[string]string{"0.0.0.0": name, "::": name, "": name, "127.0.0.1": "127.0.0.1",
		"::1": "::1", "kafka.example.com": "kafka.example.com"} {
		if got := reachableHost(in); got != want {
			t.Errorf("reachableHost(%q) = %q, want %q", in, got, want)
		}
	}
}
