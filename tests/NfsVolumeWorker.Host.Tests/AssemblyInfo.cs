// The tests start worker processes on 2 shared cores: one test at a time keeps their timings meaningful.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
