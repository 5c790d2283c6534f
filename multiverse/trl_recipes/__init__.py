"""trl_recipes"""
