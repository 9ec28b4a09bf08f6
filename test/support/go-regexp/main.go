// Command go-regexp answers, for each pattern it reads, what the collector's regexp engine (Go's
// regexp, RE2 syntax) makes of it: whether regexp.Compile accepts it and, if so, whether it matches
// each sample input (MatchString: unanchored, as the collector's processors use it).
//
// Input: one JSON object per line, {"pattern": "...", "inputs": ["...", ...]}.
// Output: one JSON object per line, in the same order,
// {"ok": true, "matches": [true, ...]} or {"ok": false, "error": "..."}.
//
// Phoenix's tests build it with the standard library only (test/regex-go-differential.int.test.ts).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
)

type query struct {
	Pattern string   `json:"pattern"`
	Inputs  []string `json:"inputs"`
}

type answer struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Matches []bool `json:"matches,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var q query
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			fmt.Fprintf(os.Stderr, "go-regexp: bad input line: %v\n", err)
			os.Exit(2)
		}
		var a answer
		re, err := regexp.Compile(q.Pattern)
		if err != nil {
			a.Error = err.Error()
		} else {
			a.OK = true
			a.Matches = make([]bool, len(q.Inputs))
			for i, s := range q.Inputs {
				a.Matches[i] = re.MatchString(s)
			}
		}
		if err := enc.Encode(a); err != nil {
			fmt.Fprintf(os.Stderr, "go-regexp: %v\n", err)
			os.Exit(2)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "go-regexp: %v\n", err)
		os.Exit(2)
	}
}
