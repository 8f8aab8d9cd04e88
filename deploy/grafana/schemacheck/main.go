// schemacheck validates Grafana JSON against Grafana's schemas, as generated into the
// grafana-foundation-sdk Go module: its strict decoders reject unknown fields, missing required
// fields and wrong types (panel options included, per panel type, once the SDK's plugins are
// registered). `make tools` builds it into ~/.cache/pooch/bin.
//
//	pooch-grafana-schemacheck deploy/k8s/pooch/files/dashboards/*.json   # dashboards
//	pooch-grafana-schemacheck -alert-rules rules.json                    # a JSON list of alert rules
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/alerting"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// orNil turns the SDK's empty BuildErrors (a typed nil that is a non-nil error) into nil.
func orNil(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func checkDashboard(raw []byte) error {
	var d dashboard.Dashboard
	if err := orNil(d.UnmarshalJSONStrict(raw)); err != nil {
		return err
	}
	return orNil(d.Validate())
}

// checkAlertRules checks every rule of a JSON list as Grafana's alert rule model.
func checkAlertRules(raw []byte) error {
	var rules []json.RawMessage
	if err := json.Unmarshal(raw, &rules); err != nil {
		return err
	}
	for i, r := range rules {
		var rule alerting.Rule
		err := orNil(rule.UnmarshalJSONStrict(r))
		if err == nil {
			err = orNil(rule.Validate())
		}
		if err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
	}
	return nil
}

func main() {
	alertRules := flag.Bool("alert-rules", false, "the files are JSON lists of Grafana alert rules")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: pooch-grafana-schemacheck [-alert-rules] FILE.json...")
		os.Exit(2)
	}
	// Panel options and field configs are checked against their panel type's schema too.
	plugins.RegisterDefaultPlugins()
	check := checkDashboard
	if *alertRules {
		check = checkAlertRules
	}
	failed := 0
	for _, path := range flag.Args() {
		raw, err := os.ReadFile(path)
		if err == nil {
			err = check(raw)
		}
		if err != nil {
			failed++
			fmt.Printf("%s: INVALID: %v\n", path, err)
			continue
		}
		fmt.Printf("%s: valid\n", path)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
