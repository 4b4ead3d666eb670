// Package kvmodel is the sequential specification the linearizability
// checks (Porcupine) hold ringkv's strong writes and quorum reads to: one
// register per key, set by a put, cleared by a delete, observed by a get.
package kvmodel

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// Input is one operation: Op is "put", "del" or "get".
type Input struct {
	Op, Key, Value string
}

// Output is what a get observed; puts and deletes output the zero value.
type Output struct {
	Value string
	Found bool
}

// Model checks each key's history on its own.
var Model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(byKey))
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() interface{} { return Output{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		st, in := state.(Output), input.(Input)
		switch in.Op {
		case "put":
			return true, Output{Value: in.Value, Found: true}
		case "del":
			return true, Output{}
		}
		return output.(Output) == st, st
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(Input)
		if in.Op == "get" {
			out := output.(Output)
			return fmt.Sprintf("get(%s) → %q found=%v", in.Key, out.Value, out.Found)
		}
		return fmt.Sprintf("%s(%s, %q)", in.Op, in.Key, in.Value)
	},
}
