"""The volunteer service: practice sites, volunteers, activities and hours, projects, honours,
village civility points and creation titles."""
