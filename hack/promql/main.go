// promql-check: parses PromQL expressions with Prometheus's own parser.
//
// Input (stdin): one JSON string per line, an expression. Output (stdout): one JSON object per
// line, {"metrics": [names the expression selects]} or {"error": "..."}; the exit code is 1 when
// any expression failed to parse. tests/cluster/chart/test_monitoring.py uses it on the rules and
// dashboard queries the chart renders.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
)

type answer struct {
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func check(expr string) answer {
	parsed, err := parser.ParseExpr(expr)
	if err != nil {
		return answer{Error: err.Error()}
	}
	seen := map[string]bool{}
	parser.Inspect(parsed, func(node parser.Node, _ []parser.Node) error {
		if selector, ok := node.(*parser.VectorSelector); ok {
			seen[selector.Name] = true
		}
		return nil
	})
	names := make([]string, 0, len(seen))
	for name := range seen {
		names = append(names, name)
	}
	sort.Strings(names)
	return answer{Metrics: names}
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	failed := false
	for scanner.Scan() {
		var expr string
		if err := json.Unmarshal(scanner.Bytes(), &expr); err != nil {
			fmt.Fprintln(os.Stderr, "not a JSON string:", err)
			os.Exit(2)
		}
		result := check(expr)
		failed = failed || result.Error != ""
		if err := out.Encode(result); err != nil {
			os.Exit(2)
		}
	}
	if failed {
		os.Exit(1)
	}
}
