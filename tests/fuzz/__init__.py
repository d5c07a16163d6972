"""A structure-aware fuzzer for the archive reader and the install-time checks.

`python -m tests.fuzz` (or `make fuzz FUZZ_ARGS=...`) builds archives from a
model (payload files, .dist-info files, RECORD, WHEEL, the tar, the zstd frame,
the zip members), mutates them at every stage, rebuilds what the stages after
depend on (RECORD hashes, Payload-Size, Content-Digest, zip CRCs) so that a
mutation deep inside reaches the check that guards it, and mixes in raw byte
mutations of the finished archive. Every input is opened and verified file by
file, then planned into an environment. Anything but the package's documented
errors (ArchiveError, StoreError) is a finding, and so is an execution that
outlives its time limit. docs/RELIABILITY.md says how it was run.
"""
