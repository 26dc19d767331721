"""What the registry tells of versions beyond their stored records: deployment status,
lineage, the whole record."""
