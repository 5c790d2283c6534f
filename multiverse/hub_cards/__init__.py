"""hub_cards"""
