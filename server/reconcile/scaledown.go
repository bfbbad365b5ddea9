package reconcile

// pickStops moves the k least useful instances of list to its front and
// returns them. Least useful first: not serving (isHealthy false), then an
// older release, then on the most loaded node — counting the picks made so
// far, so a scale-down evens nodes out — then the highest index, then the
// id. load is a node's reserved share of its usable memory (usable(node)
// MB) before this pick; memory is what stopping an instance frees.
//
// Selection, not sorting: k is small (a scale-down step, a rolling deploy's
// few old instances) and each pick changes the loads the next compares.
func pickStops(list []*Instance, k int, isHealthy func(*Instance) bool, load func(node string) float64,
	usable func(node string) int64, memory func(*Instance) int64) []*Instance {
	freed := map[string]int64{}
	loadOf := func(inst *Instance) float64 {
		return load(inst.Node) - float64(freed[inst.Node])/float64(usable(inst.Node))
	}
	worse := func(x, y *Instance) bool {
		if hx, hy := isHealthy(x), isHealthy(y); hx != hy {
			return !hx
		}
		if x.Release != y.Release {
			return x.Release < y.Release
		}
		if lx, ly := loadOf(x), loadOf(y); lx != ly {
			return lx > ly
		}
		if x.Index != y.Index {
			return x.Index > y.Index
		}
		return x.ID < y.ID
	}
	for i := 0; i < k && i < len(list); i++ {
		w := i
		for j := i + 1; j < len(list); j++ {
			if worse(list[j], list[w]) {
				w = j
			}
		}
		list[i], list[w] = list[w], list[i]
		freed[list[i].Node] += memory(list[i])
	}
	return list[:min(k, len(list))]
}
