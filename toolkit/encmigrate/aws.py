"""Deprecated alias: deploy ``encmigrate.lambda_rotation.lambda_handler`` instead."""

from encmigrate.lambda_rotation import lambda_handler as lambda_handler
