"""The API schema files (YAML); loaded by vdsm_py.rpc.schema."""
