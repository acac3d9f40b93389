"""Batch identification over photo collections: scan folders into a job (every face identified against the
gallery, stored with its embedding), cluster the unknown faces under the user's constraints, name clusters,
export, report. Front ends (facerec.cli.batch) are thin over `facerec.batch.service`."""
