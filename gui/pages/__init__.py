"""The setup wizard's pages: each edits one part of a RunConfig and validates through
RunConfig.validate() (no validation logic here)."""
